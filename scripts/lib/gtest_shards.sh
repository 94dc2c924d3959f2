# Sourced by the sanitizer scripts. run_gtest_shards BINARY LOG_DIR N_SHARDS [gtest args...]
# runs the binary as N_SHARDS gtest shards at once (every test runs in exactly one shard; the
# tests are safe side by side, as ctest -j runs them in the Release step), prints each shard's
# last lines, and on a failure prints that shard's whole log and returns 1.
run_gtest_shards() {
  local bin=$1 dir=$2 n=$3
  shift 3
  rm -rf "$dir"
  mkdir -p "$dir"
  local pids=() i failed=0
  for ((i = 0; i < n; i++)); do
    GTEST_TOTAL_SHARDS=$n GTEST_SHARD_INDEX=$i "$bin" "$@" >"$dir/shard-$i.log" 2>&1 &
    pids+=("$!")
  done
  for ((i = 0; i < n; i++)); do
    if wait "${pids[$i]}"; then
      tail -3 "$dir/shard-$i.log"
    else
      echo "test shard $i of $n failed:" >&2
      cat "$dir/shard-$i.log" >&2
      failed=1
    fi
  done
  return "$failed"
}

#!/usr/bin/env bash
# The sanitizer step: builds kvrag with clang under AddressSanitizer + UndefinedBehaviorSanitizer,
# runs the test suite (all but the python-reference comparison, which only re-checks numbers), then
# runs every libFuzzer target (tests/fuzz/*_fuzz.cpp), JOBS at a time, for FUZZ_SECONDS / n_targets each: the GGUF
# reader from generated model files, the others from their committed seed corpus
# (tests/fuzz/corpus/<target>/, copied to a scratch folder so the repository's corpus never
# changes). Prints each target's executions; a crash fails the step and leaves its input in
# $BUILD_DIR/fuzz-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${ASAN_BUILD_DIR:-build-asan}
FUZZ_SECONDS=${FUZZ_SECONDS:-120}
JOBS=${JOBS:-$(nproc)}
CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVRAG_FUZZ=ON -DKVRAG_UNITY=ON >/dev/null
build_start=$SECONDS
cmake --build "$BUILD_DIR" -j "$JOBS"
echo "sanitize: the ASan/UBSan build took $((SECONDS - build_start)) s"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The suite in JOBS gtest shards at once (scripts/lib/gtest_shards.sh).
source scripts/lib/gtest_shards.sh
suite_start=$SECONDS
run_gtest_shards "$BUILD_DIR/kvrag_tests" "$BUILD_DIR/test-shards" "$JOBS" --gtest_brief=1 \
  --gtest_filter='-ReferenceForward*:*TenThousand*'
echo "sanitize: the ASan/UBSan suite took $((SECONDS - suite_start)) s"

# Every target CMake builds (the same glob), each with an equal share of FUZZ_SECONDS (at least 5 s).
mapfile -t TARGETS < <(for f in tests/fuzz/*_fuzz.cpp; do basename "$f" .cpp; done)
PER_TARGET=$(( FUZZ_SECONDS / ${#TARGETS[@]} ))
if [ "$PER_TARGET" -lt 5 ]; then PER_TARGET=5; fi
WORK="$BUILD_DIR/fuzz-work"
ARTIFACTS="$BUILD_DIR/fuzz-artifacts"
rm -rf "$WORK"
mkdir -p "$WORK" "$ARTIFACTS"

# The GGUF reader's seeds: small valid models of several types and vocabulary-only files.
mkdir -p "$WORK/gguf_fuzz"
for t in f32 q8_0 q4_0 f16; do
  "$BUILD_DIR/kvrag" make-model -o "$WORK/gguf_fuzz/seed-$t.gguf" --type "$t" --dim 32 --layers 1 --heads 2 --kv-heads 1 --ff 32 >/dev/null
done
SHARED=${KVRAG_SHARED_DATA:-../shared/data}
if [ -d "$SHARED/vocab" ]; then cp "$SHARED"/vocab/ggml-vocab-llama-spm.gguf "$SHARED"/vocab/ggml-vocab-gpt-2.gguf "$WORK/gguf_fuzz"/ 2>/dev/null || true; fi

# Inputs longer than a target's max_len are cut by libFuzzer: PDFs and GGUF files need room.
max_len() {
  case "$1" in
    gguf_fuzz|extract_fuzz) echo 65536 ;;
    multipart_fuzz|openai_request_fuzz) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

# One target's run; its summary line or, on a crash, its log.
fuzz_one() {
  local target=$1 log="$WORK/$1.log"
  # -timeout: one input running 20 s is a hang; -rss_limit_mb: so is a runaway allocation.
  if ! "$BUILD_DIR/$target" -max_total_time="$PER_TARGET" -timeout=20 -rss_limit_mb=4096 -max_len="$(max_len "$target")" \
      -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$target-" "$WORK/$target" >"$log" 2>&1; then
    tail -60 "$log"
    echo "sanitize: $target failed; its input is in $ARTIFACTS/ (add it as a regression test in tests/<module>/)" >&2
    return 1
  fi
  local execs
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "fuzz: $target: ${execs:-?} executions in ${PER_TARGET}s, corpus $(find "$WORK/$target" -type f | wc -l) files"
}

for target in "${TARGETS[@]}"; do
  if [ "$target" != gguf_fuzz ]; then
    if [ ! -d "tests/fuzz/corpus/$target" ]; then
      echo "sanitize: $target has no seed corpus in tests/fuzz/corpus/$target/" >&2
      exit 1
    fi
    mkdir -p "$WORK/$target"
    cp tests/fuzz/corpus/"$target"/* "$WORK/$target"/
  fi
done
# JOBS targets at a time (each fuzzer is one process on one core).
failed=0
for ((i = 0; i < ${#TARGETS[@]}; i += JOBS)); do
  pids=()
  for ((j = i; j < i + JOBS && j < ${#TARGETS[@]}; j++)); do
    fuzz_one "${TARGETS[$j]}" >"$WORK/${TARGETS[$j]}.summary" 2>&1 &
    pids+=("$!")
  done
  for ((j = 0; j < ${#pids[@]}; j++)); do
    wait "${pids[$j]}" || failed=1
    cat "$WORK/${TARGETS[$((i + j))]}.summary"
  done
  if [ "$failed" != 0 ]; then exit 1; fi
done
echo "sanitize: ASan/UBSan tests passed; fuzzed ${#TARGETS[@]} targets for ${PER_TARGET}s each without a crash"

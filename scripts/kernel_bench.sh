#!/usr/bin/env bash
# Old-vs-new kernel micro-bench in one run: builds tools/kernel_bench.cpp against the kernels of
# OLD_REV (default: main) and of the working tree, then alternates them ROUNDS times (default 3)
# for f16 and q8_0 at 512 tokens and at 1 token. Figures are GFLOP/s over thread CPU time.
#   scripts/kernel_bench.sh [OLD_REV] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
OLD_REV=${1:-main}
ROUNDS=${2:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/old"
git archive "$OLD_REV" src/kernels src/core | tar -x -C "$WORK/old"

build() {  # build ROOT OUT
    local root=$1 out=$2 objs=() f flags o
    for f in "$root"/src/kernels/*.cpp "$root"/src/core/ggml_type.cpp; do
        case $(basename "$f") in attention*|ops*.cpp) continue ;; esac
        flags=""
        case $f in *_avx2.cpp) flags="-mavx2 -mfma -mf16c" ;; esac
        o="$out.$(basename "$f").o"
        # shellcheck disable=SC2086
        g++ -std=c++20 -O3 -DNDEBUG $flags -I"$root/src" -c "$f" -o "$o"
        objs+=("$o")
    done
    g++ -std=c++20 -O3 -DNDEBUG -I"$root/src" tools/kernel_bench.cpp "${objs[@]}" -o "$out"
}
build "$WORK/old" "$WORK/bench-old"
build "$PWD" "$WORK/bench-new"

echo "old=$OLD_REV new=working tree; load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    for type in f16 q8_0; do
        for tokens in 512 1; do
            reps=3; [ "$tokens" = 1 ] && reps=50
            echo "round $r old $("$WORK/bench-old" "$type" "$tokens" "$reps" | tail -1)"
            echo "round $r new $("$WORK/bench-new" "$type" "$tokens" "$reps" | tail -1)"
        done
    done
done

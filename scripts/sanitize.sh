#!/usr/bin/env bash
# The sanitizer step: builds kvrag with clang under AddressSanitizer + UndefinedBehaviorSanitizer,
# runs the test suite (all but the python-reference comparison, which only re-checks numbers), then
# fuzzes the GGUF reader with libFuzzer from a seed corpus of valid files for FUZZ_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${ASAN_BUILD_DIR:-build-asan}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
JOBS=${JOBS:-$(nproc)}
CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVRAG_FUZZ=ON >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
"$BUILD_DIR/kvrag_tests" --gtest_brief=1 \
  --gtest_filter='-ReferenceForward*:*TenThousand*'

# Seed corpus: small valid models of several types and vocabulary-only files.
CORPUS="$BUILD_DIR/fuzz-corpus"
mkdir -p "$CORPUS"
for t in f32 q8_0 q4_0 f16; do
  "$BUILD_DIR/kvrag" make-model -o "$CORPUS/seed-$t.gguf" --type "$t" --dim 32 --layers 1 --heads 2 --kv-heads 1 --ff 32 >/dev/null
done
SHARED=${KVRAG_SHARED_DATA:-../shared/data}
if [ -d "$SHARED/vocab" ]; then cp "$SHARED"/vocab/ggml-vocab-llama-spm.gguf "$SHARED"/vocab/ggml-vocab-gpt-2.gguf "$CORPUS"/ 2>/dev/null || true; fi
"$BUILD_DIR/gguf_fuzz" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 "$CORPUS" 2>&1 | tail -12
echo "sanitize: ASan/UBSan tests passed; fuzzed the GGUF reader for ${FUZZ_SECONDS}s without a crash"

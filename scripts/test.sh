#!/usr/bin/env bash
# Builds kvrag and runs the whole test suite: first the sanitizer step (an ASan/UBSan build of
# the suite plus a bounded libFuzzer run of every fuzz target, scripts/sanitize.sh), then the
# ThreadSanitizer step (the thread pool, scheduler and server tests, scripts/tsan.sh: about
# 5.5 minutes on 2 cores, its build included), then the Release build's suite with ctest, whose
# summary closes the output. KVRAG_SKIP_SANITIZE=1 skips the sanitizer step and
# KVRAG_TSAN_STEP=0 the ThreadSanitizer step (quick local runs). Every build compiles the
# library and the test binaries as unity builds (KVRAG_UNITY): several times less compile CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
# Each step's wall time goes to the output, so a CI log shows where the minutes went.
step_start=$SECONDS
step_done() { echo "test.sh: $1 took $((SECONDS - step_start)) s"; step_start=$SECONDS; }
if [ "${KVRAG_SKIP_SANITIZE:-0}" != "1" ]; then
  bash scripts/sanitize.sh
  step_done "the sanitizer step (ASan/UBSan build, suite, fuzzing)"
fi
if [ "${KVRAG_TSAN_STEP:-1}" = "1" ]; then
  bash scripts/tsan.sh
  step_done "the ThreadSanitizer step"
fi
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DKVRAG_UNITY=ON >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"
step_done "the Release build"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS"

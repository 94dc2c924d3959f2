#!/usr/bin/env bash
# Builds kvrag and runs the whole test suite: first the sanitizer step (an ASan/UBSan build of
# the suite plus a bounded libFuzzer run of every fuzz target, scripts/sanitize.sh), then the
# ThreadSanitizer step (the scheduler and server tests, scripts/tsan.sh), then the Release
# build's suite with ctest, whose summary closes the output. KVRAG_SKIP_SANITIZE=1 and
# KVRAG_SKIP_TSAN=1 skip a step (for a quick local run; CI runs all three).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
if [ "${KVRAG_SKIP_SANITIZE:-0}" != "1" ]; then
  bash scripts/sanitize.sh
fi
if [ "${KVRAG_SKIP_TSAN:-0}" != "1" ]; then
  bash scripts/tsan.sh
fi
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS"

#!/usr/bin/env bash
# The ThreadSanitizer step: builds kvrag_tsan_tests (only the test files below, so the step
# does not compile the whole suite a third time) and the kvrag binary with clang under
# -fsanitize=thread (KVRAG_TSAN, build dir build-tsan, the library as a unity build) and runs the
# tests whose code runs on several threads: the thread pool (ThreadPool), the scheduler (SchedulerCore, Scheduler) and the
# server end to end (Server*, EncoderServer*, ChatHistoryServer*, which start the TSan-built
# `kvrag serve` as a child).
# Every report, from the test process or a server child, is written to $BUILD_DIR/tsan-reports/
# (TSAN_OPTIONS log_path), so a race in a child whose output the test does not read still fails
# the step; the reports are printed. Prints the step's wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${TSAN_BUILD_DIR:-build-tsan}
JOBS=${JOBS:-$(nproc)}
FILTER=${TSAN_FILTER:-'ThreadPool.*:SchedulerCore.*:Scheduler.*:Server*:EncoderServer*:ChatHistoryServer*'}
start=$(date +%s)
# -gline-tables-only: file:line in every report stack at a fraction of full -g's build time.
CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVRAG_TSAN=ON -DKVRAG_UNITY=ON \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" --target kvrag_tsan_tests kvrag
REPORTS="$BUILD_DIR/tsan-reports"
rm -rf "$REPORTS"
mkdir -p "$REPORTS"
# second_deadlock_stack: both stacks of a lock-order inversion. exitcode 66: a process that saw
# a race exits non-zero even when the race did not break its test.
export TSAN_OPTIONS="log_path=$PWD/$REPORTS/tsan second_deadlock_stack=1 exitcode=66 ${TSAN_OPTIONS:-}"
status=0
source scripts/lib/gtest_shards.sh
run_gtest_shards "$BUILD_DIR/kvrag_tsan_tests" "$BUILD_DIR/test-shards" "$JOBS" --gtest_brief=1 --gtest_filter="$FILTER" || status=$?
if compgen -G "$REPORTS/tsan.*" >/dev/null; then
  echo "tsan: ThreadSanitizer reports:" >&2
  cat "$REPORTS"/tsan.* >&2
  status=1
fi
echo "tsan: $( [ "$status" = 0 ] && echo "no data race in" || echo "FAILED:" ) $FILTER ($(( $(date +%s) - start )) s including the build)"
exit "$status"

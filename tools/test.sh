#!/usr/bin/env bash
# Sets everything up and runs every test. Safe to run twice; run as root on Debian 12.
#   1. bootstrap: Debian and npm packages (idempotent)
#   2. one g++ build (-Werror) of everything, then ctest in parallel (unit, integration, clients,
#      system with real QEMU guests, style)
#   3. a clang-14 build of the fuzz targets only, each fuzzer run for METALD_FUZZ_SECONDS (20 s)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc)
bash tools/bootstrap.sh

build=${METALD_BUILD_DIR:-$root/build/ci}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMETALD_WERROR=ON >/dev/null
ninja -C "$build" -j"$jobs"
ctest --test-dir "$build" --output-on-failure -j"$jobs" --timeout 900

if [ "${METALD_SKIP_FUZZ:-0}" != 1 ]; then
  fuzz=${METALD_FUZZ_BUILD_DIR:-$root/build/fuzz}
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$fuzz" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMETALD_FUZZ=ON -DMETALD_TESTS=OFF -DMETALD_BENCH=OFF >/dev/null
  targets=$(awk '{print $1}' "$fuzz/fuzzers.txt" 2>/dev/null | tr '\n' ' ')
  if [ -n "$targets" ]; then
    # shellcheck disable=SC2086
    ninja -C "$fuzz" -j"$jobs" $targets
    bash tools/run-fuzzers.sh "$fuzz" "${METALD_FUZZ_SECONDS:-20}"
  fi
fi

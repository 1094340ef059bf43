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
  # Only the fuzz targets are built (fuzzers.txt, written at configure time, lists them).
  # Budget: about 8 minutes on 2 cores, build included; the fuzzers share the cores
  # (METALD_FUZZ_JOBS, default nproc).
  fuzz=${METALD_FUZZ_BUILD_DIR:-$root/build/fuzz}
  # -O1 and line tables only: fuzzers need speed and symbolized stacks, not full debug info, and
  # this halves the build. -DNDEBUG as in the shipped build: we fuzz what ships (ASan/UBSan and
  # the harnesses' own checks stay on). Boost's debug asserts are off there too; see
  # metald/rpc/fuzz/regress/README.md for the Beast assert that an assert-on build trips.
  flags="-O1 -gline-tables-only -DNDEBUG"
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$fuzz" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS_RELEASE="$flags" -DCMAKE_CXX_FLAGS_RELEASE="$flags" \
    -DMETALD_FUZZ=ON -DMETALD_TESTS=OFF -DMETALD_BENCH=OFF >/dev/null
  targets=$(awk '{print $1}' "$fuzz/fuzzers.txt" 2>/dev/null | tr '\n' ' ')
  if [ -n "$targets" ]; then
    # -k 0: one broken fuzzer must not hide the others' results. A target that failed to build
    # loses its old binary, so that run-fuzzers.sh counts it as failed ("not built").
    # shellcheck disable=SC2086
    if ! ninja -C "$fuzz" -k 0 -j"$jobs" $targets; then
      for t in $targets; do
        if ! grep -q 'no work to do' < <(ninja -C "$fuzz" -n "$t"); then
          find "$fuzz" -name "$t" -type f -delete
        fi
      done
    fi
    bash tools/run-fuzzers.sh "$fuzz" "${METALD_FUZZ_SECONDS:-20}" "${METALD_FUZZ_JOBS:-$jobs}"
  fi
fi

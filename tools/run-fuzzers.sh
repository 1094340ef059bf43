#!/usr/bin/env bash
# Runs every fuzzer listed in BUILD/fuzzers.txt for SECONDS each, starting from its seed corpus
# in the repository (never modified: new inputs go to a temporary directory). Prints one line per
# fuzzer and a closing "N passed, N failed" line; exits non-zero when a fuzzer found a crash.
set -uo pipefail
build=${1:?usage: run-fuzzers.sh BUILD_DIR SECONDS}
seconds=${2:-30}
list="$build/fuzzers.txt"
[ -f "$list" ] || { echo "run-fuzzers: no $list (configure with -DMETALD_FUZZ=ON)"; exit 1; }
passed=0 failed=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
while read -r name corpus; do
  bin="$build/$(find "$build" -name "$name" -type f -perm -u+x -printf '%P\n' | head -n1)"
  [ -x "$bin" ] || { echo "FAIL $name: not built"; failed=$((failed + 1)); continue; }
  mkdir -p "$work/$name"
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=0 \
       -artifact_prefix="$work/$name/" "$work/$name" ${corpus:+"$corpus"} >"$work/$name.log" 2>&1; then
    echo "ok   $name ($(grep -c . "$work/$name.log" || true) log lines, ${seconds}s)"
    passed=$((passed + 1))
  else
    echo "FAIL $name: see below"; tail -n 40 "$work/$name.log"
    ls "$work/$name"/crash-* "$work/$name"/timeout-* "$work/$name"/leak-* 2>/dev/null | head
    failed=$((failed + 1))
  fi
done <"$list"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

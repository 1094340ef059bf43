#!/usr/bin/env bash
# Runs every fuzzer listed in BUILD/fuzzers.txt for SECONDS each, starting from its seed corpus
# in the repository (never modified: new inputs go to a temporary directory). Up to JOBS fuzzers
# run at once (default: METALD_FUZZ_JOBS, else nproc), each on one core. Prints one line per
# fuzzer in list order and a closing "fuzz: N passed, N failed" line; exits non-zero when a
# fuzzer failed. Crash, timeout and leak inputs are kept in BUILD/fuzz-artifacts/<fuzzer>/ with
# the command that replays them.
#   usage: run-fuzzers.sh BUILD_DIR [SECONDS] [JOBS]
set -uo pipefail
build=$(cd "${1:?usage: run-fuzzers.sh BUILD_DIR [SECONDS] [JOBS]}" && pwd)
seconds=${2:-30}
jobs=${3:-${METALD_FUZZ_JOBS:-$(nproc)}}
list="$build/fuzzers.txt"
[ -f "$list" ] || { echo "run-fuzzers: no $list (configure with -DMETALD_FUZZ=ON)"; exit 1; }
artifacts="$build/fuzz-artifacts"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run_one INDEX NAME CORPUS: runs one fuzzer; writes its result line to $work/INDEX.result and
# "ok" or "fail" to $work/INDEX.status.
run_one() {
  local i=$1 name=$2 corpus=$3
  local bin log="$work/$i.log" out="$artifacts/$name"
  bin=$(find "$build" -name "$name" -type f -perm -u+x -print -quit)
  if [ -z "$bin" ]; then
    echo "FAIL $name: not built" >"$work/$i.result"
    echo fail >"$work/$i.status"
    return
  fi
  local seeds=()
  if [ -n "$corpus" ]; then
    if [ -d "$corpus" ]; then seeds=("$corpus"); else echo "warn $name: no corpus $corpus" >&2; fi
  fi
  rm -rf "$out" && mkdir -p "$out" "$work/$i"
  # -timeout: one input may take at most 10 s; -rss_limit_mb bounds memory per process.
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$out/" "$work/$i" "${seeds[@]}" >"$log" 2>&1; then
    local execs
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    echo "ok   $name (${execs:-?} runs in ${seconds}s, corpus $(find "$work/$i" -type f | wc -l) new)" \
      >"$work/$i.result"
    echo ok >"$work/$i.status"
    rmdir "$out" 2>/dev/null || true
  else
    {
      echo "FAIL $name:"
      grep -v '^#[0-9]' "$log" | tail -n 60
      for a in "$out"/crash-* "$out"/timeout-* "$out"/leak-* "$out"/oom-*; do
        [ -e "$a" ] && echo "  replay: $bin $a"
      done
    } >"$work/$i.result"
    echo fail >"$work/$i.status"
  fi
}

names=() corpora=()
while read -r name corpus; do
  [ -n "$name" ] || continue
  names+=("$name")
  corpora+=("${corpus:-}")
done <"$list"

running=0
for i in "${!names[@]}"; do
  run_one "$i" "${names[$i]}" "${corpora[$i]}" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

passed=0 failed=0
for i in "${!names[@]}"; do
  cat "$work/$i.result"
  if [ "$(cat "$work/$i.status" 2>/dev/null)" = ok ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

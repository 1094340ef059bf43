#!/usr/bin/env bash
# run_vm_bench.sh BUILD_DIR [OUT_FILE]: the create→ready benchmark recorded in BENCHMARKS.md.
#
# Starts BUILD_DIR's metald (temp data dir, dev tokens, 127.0.0.1:0, image root = the guest
# image in BUILD_DIR/guest, built first if missing), then runs bench/vm_bench.py: REPS times,
# alternating, a VM created and booted through metald until the guest prints
# METALD-GUEST-READY, against the same qemu-system-x86_64 command (taken from the metald VM's
# /proc/<pid>/cmdline) started by hand and continued over QMP. Writes the medians, the ratio and
# metald's own overhead per create+boot+delete to OUT_FILE (default /tmp/vm-bench.<time>.md) and
# prints them. Tunables: REPS (default 5), METALD_E2E_ACCEL (default tcg: KVM cannot boot guests
# on the nested build hosts). Not a test: nothing here passes or fails on a time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:?usage: run_vm_bench.sh BUILD_DIR [OUT_FILE]}" && pwd)
out=${2:-/tmp/vm-bench.$(date +%Y%m%d-%H%M%S).md}
reps=${REPS:-5}
# shellcheck source=tests/system/metald_lib.sh
source "$root/tests/system/metald_lib.sh"

metald=$build/metald/daemon/metald
[ -x "$metald" ] || { echo "no $metald: ninja -C $build metald" >&2; exit 2; }
guest=$build/guest
bash "$root/tools/build-guest-image.sh" "$guest" >/dev/null

tmp=$(mktemp -d /tmp/metald-vmb.XXXXXX)
data=$tmp/d
ml_init "$tmp/work"
# shellcheck disable=SC2317  # Called through the EXIT trap.
cleanup() {
  local pid
  [ -n "$ML_PID" ] && ml_stop_metald TERM
  for pid in $(ml_pids_matching "$data/") $(ml_pids_matching bench-by-hand); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

ml_start_metald "$metald" "$data" "$guest" --log-level warn || exit 1
echo "metald on $ML_ADDR; $reps reps" >&2
python3 "$root/bench/vm_bench.py" --addr "$ML_ADDR" --data-dir "$data" --guest-dir "$guest" \
  --reps "$reps" --out "$out"
echo "written: $out" >&2

#!/usr/bin/env bash
# Starts the real metald binary (temp data dir, dev tokens, 127.0.0.1:0, image root = the guest
# dir, QEMU under TCG), runs a test command against it, then stops metald and removes every VM
# process and file it left. The test's exit status is the script's; a metald that dies during the
# test fails it too.
#
#   run_with_metald.sh METALD_BINARY GUEST_DIR -- TEST COMMAND [ARGS...]
#
# The test gets in its environment:
#   METALD_ADDR      host:port metald serves on (Connect, gRPC, gRPC-Web; HTTP/1.1 and h2c)
#   METALD_DATA_DIR  metald's data dir (a VM's console log is $METALD_DATA_DIR/vms/<id>/console.log)
#   METALD_GUEST_DIR the guest image (vmlinuz, initrd.img), also metald's only image root
# Exit 77 (skipped) without qemu-system-x86_64, jq or a guest image.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/system/metald_lib.sh
source "$here/../system/metald_lib.sh"

if (($# < 4)) || [ "$3" != "--" ]; then
  echo "usage: $0 METALD_BINARY GUEST_DIR -- TEST [ARGS...]" >&2
  exit 2
fi
metald=$1
guest=$2
shift 3
command -v qemu-system-x86_64 >/dev/null || { echo "SKIP: no qemu-system-x86_64"; exit 77; }
command -v jq >/dev/null || { echo "SKIP: no jq"; exit 77; }
if [ ! -f "$guest/vmlinuz" ] || [ ! -f "$guest/initrd.img" ]; then
  echo "SKIP: no guest image in '$guest' (tools/build-guest-image.sh DIR)"
  exit 77
fi
guest=$(cd "$guest" && pwd)

tmp=$(mktemp -d /tmp/metald-cl.XXXXXX)
data=$tmp/d
ml_init "$tmp/work"
# shellcheck disable=SC2317  # Called through the EXIT trap.
cleanup() {
  local pid
  [ -n "$ML_PID" ] && ml_stop_metald KILL
  for pid in $(ml_pids_matching "$data/"); do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

ml_start_metald "$metald" "$data" "$guest" || exit 1
echo "run_with_metald: metald listening on $ML_ADDR (data dir $data)"

rc=0
METALD_ADDR=$ML_ADDR METALD_DATA_DIR=$data METALD_GUEST_DIR=$guest "$@" || rc=$?

if ! kill -0 "$ML_PID" 2>/dev/null; then
  echo "run_with_metald: metald died during the test; its log:" >&2
  tail -n 60 "$ML_LOG" >&2
  ML_PID=
  rc=1
else
  ml_stop_metald TERM
  if [ "$ML_RC" != 0 ]; then
    echo "run_with_metald: metald exited $ML_RC on SIGTERM" >&2
    rc=1
  fi
fi
if [ "$rc" != 0 ]; then
  echo "----- metald log (last 60 lines) -----" >&2
  tail -n 60 "$ML_LOG" >&2
fi
left=$(ml_pids_matching "$data/")
if [ -n "$left" ]; then
  echo "run_with_metald: VMM processes left after the test: $left" >&2
  rc=1
fi
exit "$rc"

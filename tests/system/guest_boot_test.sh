#!/usr/bin/env bash
# System test: the metald test guest (tools/build-guest-image.sh) boots under QEMU -M microvm
# with TCG and keeps its contract (docs/guest-image.md):
#   1. it prints METALD-GUEST-READY, runs a metald.load= job, and powers off on the ACPI power
#      button (QMP system_powerdown): METALD-GUEST-POWEROFF, then QEMU exits 0;
#   2. inside a fresh network namespace, with a TAP device and metald.net=, it configures eth0,
#      answers ping from the namespace, and boots from the ext4 root image (metald.root=);
#   3. Ctrl-Alt-Del (QMP send-key) reboots it: METALD-GUEST-REBOOT, then READY a second time;
#   4. with metald.cad=poweroff, Ctrl-Alt-Del powers it off and QEMU exits.
# Usage: guest_boot_test.sh [GUEST_DIR]   (default $METALD_GUEST_DIR or <repo>/build/guest;
# the image is built there first if missing or stale). Needs root (netns, TAP), qemu-system-x86_64
# and python3 (QMP client). Exit 77 = skipped. Every VM, namespace and temp file is removed on any
# exit path. Prints how long each boot took to reach READY.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
guest=${1:-${METALD_GUEST_DIR:-$root/build/guest}}
# Generous: a TCG boot takes ~2 s on an idle build machine, but 20+ s when the host is saturated.
BOOT_TIMEOUT=${METALD_GUEST_BOOT_TIMEOUT:-180}
EXIT_TIMEOUT=${METALD_GUEST_EXIT_TIMEOUT:-120}

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespace and TAP device)"
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed"
command -v python3 >/dev/null || skip "python3 not installed"

tmp=$(mktemp -d /tmp/metald-guest-test.XXXXXX)
ns="metald-gt-$$"
vm_names=()

cleanup() {
  local name pid
  for name in "${vm_names[@]}"; do
    pid=$(cat "$tmp/$name.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

fail() {
  echo "FAIL: $*" >&2
  local log
  for log in "$tmp"/*.log; do
    [ -f "$log" ] || continue
    echo "----- $(basename "$log") (last 40 lines) -----" >&2
    tail -n 40 "$log" | tr -d '\r' >&2
  done
  exit 1
}

bash "$root/tools/build-guest-image.sh" "$guest" || fail "guest image build failed"
for f in vmlinuz initrd.img rootfs.ext4 manifest; do
  [ -f "$guest/$f" ] || fail "build produced no $guest/$f"
done

# Under TCG the guest TSC runs at the host TSC rate; see tools/guest/host-tsc-khz.sh for why the
# guest must not calibrate it. panic=-1 + -no-reboot: a guest panic ends QEMU at once.
tsc_khz=$("$root/tools/guest/host-tsc-khz.sh") || fail "cannot determine the host TSC frequency"
BASE_APPEND="console=ttyS0 tsc_early_khz=$tsc_khz tsc=reliable panic=-1"

# qmp NAME COMMAND [ARGS_JSON]: runs one QMP command on VM NAME, prints the reply.
qmp() {
  python3 - "$tmp/$1.qmp" "$2" "${3:-}" <<'PY'
import json, socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.settimeout(30)
sock.connect(sys.argv[1])
f = sock.makefile("rw")
json.loads(f.readline())  # greeting
def run(cmd, args=None):
    msg = {"execute": cmd}
    if args:
        msg["arguments"] = args
    f.write(json.dumps(msg) + "\n")
    f.flush()
    while True:
        reply = json.loads(f.readline())
        if "return" in reply or "error" in reply:
            return reply
run("qmp_capabilities")
reply = run(sys.argv[2], json.loads(sys.argv[3]) if sys.argv[3] else None)
print(json.dumps(reply))
sys.exit(0 if "return" in reply else 1)
PY
}

# start_vm NAME NETNS APPEND [QEMU_ARGS...]: starts QEMU in the background (inside NETNS unless
# it is "-"); console in $tmp/NAME.log, QMP at $tmp/NAME.qmp, pid in $tmp/NAME.pid.
start_vm() {
  local name=$1 netns=$2 append=$3
  shift 3
  local -a prefix=()
  [ "$netns" = - ] || prefix=(ip netns exec "$netns")
  vm_names+=("$name")
  date +%s.%N >"$tmp/$name.start"
  "${prefix[@]}" qemu-system-x86_64 \
    -M microvm,pit=on,rtc=on,acpi=on -accel tcg -nodefaults -no-user-config -nographic \
    -global virtio-mmio.force-legacy=false \
    -serial "file:$tmp/$name.log" -qmp "unix:$tmp/$name.qmp,server=on,wait=off" \
    -m 256 -smp 1 -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" \
    -append "$BASE_APPEND $append" "$@" \
    </dev/null >"$tmp/$name.stderr" 2>&1 &
  echo $! >"$tmp/$name.pid"
}

vm_alive() { kill -0 "$(cat "$tmp/$1.pid")" 2>/dev/null; }

# count NAME TEXT: how many console lines of VM NAME contain TEXT.
count() {
  if [ -f "$tmp/$1.log" ]; then tr -d '\r' <"$tmp/$1.log" | grep -c -F -- "$2" || true; else echo 0; fi
}

# wait_console NAME TEXT [N]: waits until TEXT appears N times (default 1) on the console.
wait_console() {
  local name=$1 text=$2 n=${3:-1} deadline=$((SECONDS + BOOT_TIMEOUT))
  while [ "$(count "$name" "$text")" -lt "$n" ]; do
    # QEMU may print the line and exit between the count and this check (-no-reboot power-off):
    # count once more before calling it an early exit.
    if ! vm_alive "$name"; then
      [ "$(count "$name" "$text")" -ge "$n" ] && break
      fail "$name: QEMU exited before printing '$text' x$n ($(cat "$tmp/$name.stderr"))"
    fi
    [ $SECONDS -lt $deadline ] || fail "$name: no '$text' x$n within ${BOOT_TIMEOUT}s"
    sleep 0.2
  done
}

# wait_ready NAME [N]: waits for the N-th READY line and reports the boot time of the first.
wait_ready() {
  wait_console "$1" METALD-GUEST-READY "${2:-1}"
  if [ "${2:-1}" = 1 ]; then
    local start now
    start=$(cat "$tmp/$1.start")
    now=$(date +%s.%N)
    echo "$1: READY $(awk -v a="$start" -v b="$now" 'BEGIN { printf "%.1f", b - a }') s after QEMU start (TCG)"
  fi
}

# wait_exit NAME: waits for QEMU to exit and checks that it exited 0 (guest power-off).
wait_exit() {
  local name=$1 pid deadline=$((SECONDS + EXIT_TIMEOUT)) rc=0
  pid=$(cat "$tmp/$name.pid")
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "$name: QEMU still running ${EXIT_TIMEOUT}s after power-off request"
    sleep 0.2
  done
  wait "$pid" || rc=$?
  [ "$rc" = 0 ] || fail "$name: QEMU exited with $rc ($(cat "$tmp/$name.stderr"))"
}

CTRL_ALT_DEL='{"keys":[{"type":"qcode","data":"ctrl"},{"type":"qcode","data":"alt"},{"type":"qcode","data":"delete"}]}'

# --- 1. boot, load job, ACPI power button -----------------------------------------------------
start_vm power - "metald.load=cpu:1+mem:16" -no-reboot
wait_ready power
wait_console power "METALD-GUEST-LOAD-DONE cpu 1"
wait_console power "METALD-GUEST-LOAD-DONE mem 16"
qmp power system_powerdown >/dev/null || fail "power: system_powerdown refused"
wait_console power METALD-GUEST-POWEROFF
wait_exit power
echo "ok 1 - ACPI power button powers the guest off and QEMU exits"

# --- 2. network in a namespace with a TAP device, ext4 root disk --------------------------------
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" tuntap add dev tap0 mode tap
ip -n "$ns" addr add 10.77.0.1/24 dev tap0
ip -n "$ns" link set tap0 up
start_vm net "$ns" "metald.net=10.77.0.2/24,10.77.0.1 metald.root=/dev/vda" -no-reboot \
  -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
  -device virtio-net-device,netdev=n0,mac=52:54:00:77:00:02 \
  -drive "file=$guest/rootfs.ext4,if=none,id=d0,format=raw,snapshot=on" \
  -device virtio-blk-device,drive=d0
wait_ready net
[ "$(count net "METALD-GUEST-ROOT /dev/vda")" = 1 ] || fail "net: guest did not switch to the ext4 root"
[ "$(count net "METALD-GUEST-NET eth0 10.77.0.2/24 via 10.77.0.1")" = 1 ] ||
  fail "net: console does not show the configured address"
ok=0
for _ in $(seq 1 30); do
  if ip netns exec "$ns" ping -c 1 -W 2 10.77.0.2 >/dev/null 2>&1; then ok=1; break; fi
  vm_alive net || break
  sleep 1
done
[ $ok = 1 ] || fail "net: guest does not answer ping from the namespace"
qmp net system_powerdown >/dev/null || fail "net: system_powerdown refused"
wait_console net METALD-GUEST-POWEROFF
wait_exit net
ip netns del "$ns"
echo "ok 2 - guest configures eth0 from metald.net=, answers ping in its netns, boots the ext4 root"

# --- 3. Ctrl-Alt-Del reboots (default) ----------------------------------------------------------
start_vm cad - "" -device virtio-keyboard-device
wait_ready cad
qmp cad send-key "$CTRL_ALT_DEL" >/dev/null || fail "cad: send-key refused"
wait_console cad METALD-GUEST-REBOOT
wait_ready cad 2
qmp cad system_powerdown >/dev/null || fail "cad: system_powerdown refused after reboot"
wait_console cad METALD-GUEST-POWEROFF
wait_exit cad
echo "ok 3 - Ctrl-Alt-Del reboots the guest; READY is printed again"

# --- 4. Ctrl-Alt-Del powers off with metald.cad=poweroff -----------------------------------------
start_vm cadoff - "metald.cad=poweroff" -no-reboot -device virtio-keyboard-device
wait_ready cadoff
qmp cadoff send-key "$CTRL_ALT_DEL" >/dev/null || fail "cadoff: send-key refused"
wait_console cadoff METALD-GUEST-POWEROFF
wait_exit cadoff
echo "ok 4 - Ctrl-Alt-Del with metald.cad=poweroff powers the guest off"
echo "PASS"

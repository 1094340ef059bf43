#!/usr/bin/env bash
# Tells whether KVM can really run a guest on this host: exits 0 only if the test guest
# (tools/build-guest-image.sh) boots under `qemu-system-x86_64 -accel kvm` and prints its
# readiness line within the timeout.
#
#   tools/kvm-usable.sh [GUEST_DIR] [TIMEOUT_SECONDS]     (defaults: <repo>/build/guest, 30)
#
# Exit codes: 0 usable; 1 not usable (no /dev/kvm, cannot open it, KVM_CREATE_VM or the boot
# fails, or no READY in time); 2 cannot tell (no qemu, no guest image).
# Why a real boot: on nested hosts /dev/kvm can exist and open, and even create a VM, yet guests
# never boot (see docs/guest-image.md), so opening the device proves nothing.
# metald's QEMU backend implements the same check in C++; keep the two in step.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
guest=${1:-$root/build/guest}
limit=${2:-30}

say() { echo "kvm-usable: $*" >&2; }

command -v qemu-system-x86_64 >/dev/null 2>&1 || { say "cannot tell: qemu-system-x86_64 not installed"; exit 2; }
for f in vmlinuz initrd.img; do
  [ -f "$guest/$f" ] || { say "cannot tell: no $guest/$f (run tools/build-guest-image.sh)"; exit 2; }
done
[ -c /dev/kvm ] || { say "no: /dev/kvm does not exist"; exit 1; }
if ! { exec 8<>/dev/kvm; } 2>/dev/null; then
  say "no: /dev/kvm cannot be opened read-write"
  exit 1
fi
exec 8>&-

tmp=$(mktemp -d /tmp/metald-kvm-usable.XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# With KVM the guest uses kvm-clock, so no TSC hints are needed. -no-reboot + panic=-1: a failing
# guest ends QEMU instead of looping.
qemu-system-x86_64 -M microvm,pit=on,rtc=on,acpi=on -accel kvm -cpu host \
  -nodefaults -no-user-config -nographic -no-reboot \
  -serial "file:$tmp/console.log" -m 128 -smp 1 \
  -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" \
  -append "console=ttyS0 panic=-1 quiet" </dev/null >"$tmp/qemu.err" 2>&1 &
pid=$!

deadline=$((SECONDS + limit))
while [ $SECONDS -lt $deadline ]; do
  if grep -q METALD-GUEST-READY "$tmp/console.log" 2>/dev/null; then
    say "yes: a KVM guest booted in $((SECONDS + limit - deadline)) s or less"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    say "no: QEMU with -accel kvm exited before the guest was ready: $(head -c 300 "$tmp/qemu.err")"
    exit 1
  fi
  sleep 0.2
done
say "no: no guest readiness line within ${limit} s under KVM"
exit 1

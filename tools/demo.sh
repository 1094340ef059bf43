#!/usr/bin/env bash
# metald in one command: installs what is missing, builds metald, metalctl and the demo guest
# image, starts metald in demo mode in the background, creates and boots a demo VM with
# metalctl, waits until the guest prints its readiness line, and prints what to type next.
#
#   sudo bash tools/demo.sh          # safe to run again: the earlier demo daemon and its VMs are
#                                    # removed first, then everything starts fresh
#   sudo bash tools/demo.sh stop     # stops the demo daemon and removes its VMs
#
# Demo mode: dev tokens ("Authorization: Bearer dev_customer_<id>"), listening on
# 127.0.0.1:8080 only, QEMU guests under TCG (KVM when it really works here); as root every VMM is
# jailed (--jail) and every VM gets its own network namespace, TAP and address (--network).
# Environment: METALD_BUILD_DIR (default build/demo), METALD_DEMO_DATA (default
# /var/lib/metald-demo), METALD_DEMO_LISTEN (default 127.0.0.1:8080), METALD_DEMO_NO_BUILD=1
# (use the metald and metalctl already built in METALD_BUILD_DIR; skip cmake and ninja).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${METALD_BUILD_DIR:-$root/build/demo}
data=${METALD_DEMO_DATA:-/var/lib/metald-demo}
addr=${METALD_DEMO_LISTEN:-127.0.0.1:8080}
pidfile=$data/metald.pid
log=$data/metald.log
guest=$build/guest
token=dev_customer_demo

say() { printf '\n== %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

# Every QEMU process started under the demo data dir (their command lines name its sockets).
demo_vmm_pids() {
  local d
  for d in /proc/[0-9]*; do
    case "$(cat "$d/comm" 2>/dev/null)" in qemu*) ;; *) continue ;; esac
    tr '\0' '\n' <"$d/cmdline" 2>/dev/null | grep -q -F -- "$data/vms/" && echo "${d#/proc/}"
  done
  return 0
}

# Stops an earlier demo: deletes its VMs through the API when the daemon answers, stops the
# daemon (SIGTERM), then kills any VMM left under the data dir (a daemon that died earlier leaves
# its VMMs running by design: a restarted metald re-adopts them) and removes the data dir.
stop_demo() {
  local pid="" ctl=$1
  [ -f "$pidfile" ] && pid=$(cat "$pidfile")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ -x "$ctl" ]; then
    local ids id
    ids=$(METALD_SERVER=http://$addr METALD_TOKEN=$token "$ctl" --output json list 2>/dev/null |
      jq -r '(.vms // .)[]? | (.vm_id // .vmId // .id) // empty' 2>/dev/null || true)
    for id in $ids; do
      echo "demo: deleting VM $id of the earlier demo"
      METALD_SERVER=http://$addr METALD_TOKEN=$token "$ctl" delete --force "$id" >/dev/null 2>&1 || true
    done
  fi
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    grep -q metald "/proc/$pid/comm" 2>/dev/null; then
    echo "demo: stopping the earlier demo daemon (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  for pid in $(demo_vmm_pids); do
    echo "demo: killing leftover VMM $pid"
    kill -KILL "$pid" 2>/dev/null || true
  done
  # The interim demo (RPC echo server) used the same port.
  local old=$build/demo-server.pid
  if [ -f "$old" ] && kill -0 "$(cat "$old")" 2>/dev/null &&
    grep -q rpc_echo "/proc/$(cat "$old")/comm" 2>/dev/null; then
    kill -TERM "$(cat "$old")" || true
  fi
  rm -f "$old"
  # The host-wide network objects outlive a daemon on purpose (running VMs keep their network
  # across a restart); with no demo VM left they can go.
  ip link del mtld0 2>/dev/null || true
  nft delete table bridge mtld 2>/dev/null || true
  nft delete table inet mtld 2>/dev/null || true
  # A jail still mounted (its daemon died before deleting the VM) must not be recursed into.
  local mnt
  while read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done < <(awk -v d="$data/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  rm -rf --one-file-system "$data"
}

metalctl_bin() { echo "$build/metald/cli/metalctl"; }

if [ "${1:-}" = stop ]; then
  stop_demo "$(metalctl_bin)"
  echo "demo: stopped"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "run as root (bootstrap installs packages; the guest image needs root)"

say "Installing what is missing (tools/bootstrap.sh)"
bash tools/bootstrap.sh

say "Building metald, metalctl and the demo guest image in $build"
if [ -z "${METALD_DEMO_NO_BUILD:-}" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMETALD_TESTS=OFF \
    -DMETALD_BENCH=OFF >/dev/null
  ninja -C "$build" -j"$(nproc)" metald metalctl
fi
metald=$build/metald/daemon/metald
metalctl=$(metalctl_bin)
[ -x "$metald" ] || metald=$(find "$build" -type f -name metald -perm -u+x | head -n1)
[ -x "$metalctl" ] || metalctl=$(find "$build" -type f -name metalctl -perm -u+x | head -n1)
if [ ! -x "$metald" ] || [ ! -x "$metalctl" ]; then die "metald or metalctl was not built"; fi
bash tools/build-guest-image.sh "$guest"

say "Starting metald on $addr (data dir $data, log $log)"
stop_demo "$metalctl"
mkdir -p "$data"
export METALD_SERVER=http://$addr METALD_TOKEN=$token
# As root the demo shows the production setup: every VMM jailed (chroot, own uid, cgroups, no
# capabilities) and every VM on its own network namespace, TAP and address behind the host bridge.
isolation=()
net_flag=()
if [ "$(id -u)" = 0 ]; then
  isolation=(--jail --network)
  net_flag=(--net)
fi
setsid "$metald" --listen "$addr" --data-dir "$data" --backend qemu --dev-tokens \
  --image-root "$guest" --accel auto --kvm-probe-kernel "$guest/vmlinuz" \
  --kvm-probe-initrd "$guest/initrd.img" --log-format text --ready-file "$data/ready" \
  "${isolation[@]}" </dev/null >"$log" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 600); do
  [ -s "$data/ready" ] && break
  kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -n 30 "$log" >&2; die "metald exited"; }
  sleep 0.2
done
[ -s "$data/ready" ] || { tail -n 30 "$log" >&2; die "metald did not become ready within 120 s"; }
echo "metald pid $(cat "$pidfile") serving on $(paste -sd' ' "$data/ready")"

say "Creating the demo VM: metalctl create --kernel $guest/vmlinuz --initrd $guest/initrd.img --vcpus 1 --memory 256M"
out=$("$metalctl" --output json create --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" \
  --cmdline "metald.hostname=demo" --vcpus 1 --memory 256M "${net_flag[@]}") ||
  die "metalctl create failed: $out"
id=$(jq -r '(.vm_id // .vmId // .vm.vm_id // .vm.vmId // .id) // empty' <<<"$out" 2>/dev/null || true)
[ -n "$id" ] || id=$(grep -oE 'vm-[0-9a-z]{26}' <<<"$out" | head -n1)
[ -n "$id" ] || die "no VM id in the output of metalctl create: $out"
echo "VM $id created"

say "Booting it: metalctl boot $id; metalctl wait $id --state RUNNING"
"$metalctl" boot "$id"
"$metalctl" --timeout 10m wait "$id" --state RUNNING --timeout 5m >/dev/null ||
  die "VM $id did not reach RUNNING"
console=$data/vms/$id/console.log
echo "waiting for the guest's readiness line in $console"
for _ in $(seq 1500); do
  grep -q METALD-GUEST-READY "$console" 2>/dev/null && break
  sleep 0.2
done
grep -q METALD-GUEST-READY "$console" 2>/dev/null ||
  die "the guest printed no METALD-GUEST-READY within 300 s; see $console"
echo "guest booted: $(tr -d '\r' <"$console" | grep -m1 METALD-GUEST-READY)"
"$metalctl" get "$id"
info=$("$metalctl" --output json get "$id")
vmm_pid=$(jq -r '.vm.processId // empty' <<<"$info")
guest_ip=$(jq -r '.vm.network[0].ipv4Address // empty' <<<"$info")
guest_ip=${guest_ip%%/*}
extra=""
if [ -n "$guest_ip" ]; then
  extra+="  ping -c 3 $guest_ip                  # the guest's own address (console: METALD-GUEST-NET)"$'\n'
fi
if [ -n "$vmm_pid" ] && [ "${#isolation[@]}" -gt 0 ]; then
  extra+="  grep -E 'Uid|CapEff|NoNewPrivs' /proc/$vmm_pid/status; ls -l /proc/$vmm_pid/root   # the jailed VMM"$'\n'
fi

cat <<EOT

The demo is up. metald (pid $(cat "$pidfile")) serves on http://$addr; the VM $id is RUNNING.
Try (as root, in this directory):

  export METALD_SERVER=http://$addr METALD_TOKEN=$token PATH=$(dirname "$metalctl"):\$PATH
  metalctl list
  metalctl get $id
${extra}  metalctl pause $id && metalctl resume $id
  metalctl reboot $id                     # the console shows METALD-GUEST-READY again
  metalctl shutdown $id                   # graceful (ACPI power button): METALD-GUEST-POWEROFF
  metalctl boot $id                       # start it again
  metalctl delete --force $id
  metalctl watch                          # state changes as they happen (another terminal)
  METALD_TOKEN=dev_customer_someone-else metalctl get $id   # not_found: tenancy
  curl -s -H 'Content-Type: application/json' -H 'Authorization: Bearer $token' \\
       -d '{}' http://$addr/metald.v1.VmService/ListVms

  Guest console:  tail -f $console
  Daemon log:     $log
  Metrics:        curl -s http://$addr/metrics | grep ^metald_
  Stop the demo:  sudo bash tools/demo.sh stop   (deletes the demo VMs, stops metald)
EOT

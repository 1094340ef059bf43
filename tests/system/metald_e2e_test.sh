#!/usr/bin/env bash
# End-to-end: the real metald binary, a real QEMU guest (TCG), driven over the public API
# (metald.v1.VmService, Connect + JSON via curl), and the guest itself checked on its console:
#   1. no token / a bad token → unauthenticated; /healthz and /readyz answer 200;
#   2. bad configs (vcpu_count 0, 1 TiB memory, kernel outside the image roots, "..", a missing
#      file, ...) → invalid_argument naming the field, and nothing left behind (no VM listed, no
#      VM directory, no QEMU process);
#   3. lifecycle create → boot → pause → resume → reboot → shutdown (graceful) → boot → delete,
#      with the guest's readiness line counted after each boot and the reboot, the vCPU threads
#      frozen while paused (their CPU time does not grow; the guest runs a CPU load job), the
#      power-off line and graceful=true on shutdown, and after delete: no process, no file,
#      not_found;
#   4. forbidden transitions → failed_precondition naming the state;
#   5. tenancy: customer bob gets not_found for every RPC on alice's VM, and ListVms hides it;
#   6. restart: a CREATED VM and a STOPPED VM survive SIGTERM of metald and a new metald on the
#      same data dir (same states; the CREATED VM's QEMU is the same process, re-adopted, and
#      boots), then both are deleted.
# Usage: metald_e2e_test.sh METALD_BINARY [GUEST_DIR]  (GUEST_DIR: default $METALD_GUEST_DIR).
# Exit 0 when every check passed, 1 otherwise, 77 = skipped (no QEMU or no guest image).
# Environment: METALD_E2E_ACCEL (default tcg), METALD_E2E_BOOT_TIMEOUT (s, default 300).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/system/metald_lib.sh
source "$here/metald_lib.sh"

metald=${1:?usage: $0 METALD_BINARY [GUEST_DIR]}
guest=${2:-${METALD_GUEST_DIR:-}}
skip() { echo "SKIP: $*"; exit 77; }
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed"
command -v jq >/dev/null || skip "jq not installed"
[ -x "$metald" ] || { echo "FATAL: $metald is not executable" >&2; exit 1; }
if [ -z "$guest" ] || [ ! -f "$guest/vmlinuz" ] || [ ! -f "$guest/initrd.img" ]; then
  skip "no guest image in '$guest' (build it: tools/build-guest-image.sh DIR)"
fi
guest=$(cd "$guest" && pwd)

# Short path: VMM unix sockets live under the data dir (108-byte limit).
tmp=$(mktemp -d /tmp/metald-e2e.XXXXXX)
data=$tmp/d
ml_init "$tmp/work"

# shellcheck disable=SC2317  # Called through the EXIT trap.
cleanup() {
  local rc=$? pid
  if [ -n "$ML_PID" ]; then ml_stop_metald KILL; fi
  # Whatever a failing run left: every QEMU started under our data dir.
  for pid in $(ml_pids_matching "$data/"); do kill -KILL "$pid" 2>/dev/null || true; done
  if [ $rc != 0 ] && [ -z "${KEEP_TMP:-}" ]; then
    local log
    for log in "$ML_WORK"/metald.*.log; do
      [ -f "$log" ] || continue
      echo "----- $(basename "$log") (last 60 lines) -----"
      tail -n 60 "$log"
    done
  fi
  if [ -n "${KEEP_TMP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# shellcheck source=tests/lib/results.sh
source "$here/../lib/results.sh"
# die MESSAGE: a step the rest depends on failed.
die() {
  fail "$@"
  echo "$passed passed, $failed failed (stopped early)"
  exit 1
}
check() { # check NAME COMMAND...: passes when COMMAND succeeds.
  local name=$1
  shift
  if "$@"; then pass "$name"; else fail "$name" "command: $*"; fi
}

# expect_ok NAME METHOD JSON [CUSTOMER]: the RPC succeeds (ML_BODY holds the reply).
expect_ok() {
  ml_rpc "$2" "$3" "${4:-alice}"
  if [ "$ML_HTTP" = 200 ]; then
    pass "$1"
    return 0
  fi
  fail "$1" "$2 $3 → HTTP $ML_HTTP $ML_BODY"
  return 1
}

# expect_err NAME CODE REGEX METHOD JSON [CUSTOMER [TOKEN]]: the RPC fails with Connect error CODE
# and a message matching the extended REGEX (case-insensitive).
expect_err() {
  local name=$1 code=$2 re=$3
  shift 3
  ml_rpc "$@"
  if [ "$ML_CODE" = "$code" ] && grep -qiE -- "$re" <<<"$ML_MESSAGE"; then
    pass "$name ($code: $ML_MESSAGE)"
  else
    fail "$name" "$1 $2 → HTTP $ML_HTTP $ML_BODY" "expected code $code with a message matching /$re/"
  fi
}

# expect_state NAME ID STATE [CUSTOMER]: GetVmInfo says STATE.
expect_state() {
  ml_rpc GetVmInfo "{\"vm_id\":\"$2\"}" "${4:-alice}"
  local got
  got=$(ml_json .vm.state)
  if [ "$got" = "VM_STATE_$3" ]; then pass "$1"; else fail "$1" "GetVmInfo $2 → $ML_HTTP $ML_BODY"; fi
}

vm_pid() { # vm_pid ID: process_id from GetVmInfo (0 when none).
  ml_rpc GetVmInfo "{\"vm_id\":\"$1\"}" alice
  local p
  p=$(ml_json .vm.process_id)
  echo "${p:-0}"
}

# no_leftovers NAME ID: no process mentions the VM id, and its directory is gone.
no_leftovers() {
  local name=$1 id=$2 pids
  pids=$(ml_pids_matching "$id")
  if [ -n "$pids" ]; then
    fail "$name: no process of $id" "$(for p in $pids; do tr '\0' ' ' <"/proc/$p/cmdline"; echo; done)"
  else
    pass "$name: no process of $id"
  fi
  if [ -e "$data/vms/$id" ]; then
    fail "$name: $data/vms/$id removed" "$(find "$data/vms/$id" | head -20)"
  else
    pass "$name: $data/vms/$id removed"
  fi
  expect_err "$name: GetVmInfo → not_found" not_found "not found" GetVmInfo "{\"vm_id\":\"$id\"}"
}

kernel=$guest/vmlinuz
initrd=$guest/initrd.img
echo "metald: $metald"
echo "guest:  $guest"

ml_start_metald "$metald" "$data" "$guest" || die "metald starts and writes its ready file"
pass "metald listens on $ML_ADDR"

# --- 1. authentication, health -------------------------------------------------------------
expect_err "ListVms without a token" unauthenticated "" ListVms '{}' -
expect_err "ListVms with a bad token" unauthenticated "" ListVms '{}' alice not-a-token
expect_err "ListVms with an empty dev customer" unauthenticated "" ListVms '{}' alice dev_customer_
for path in healthz readyz; do
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 30 "http://$ML_ADDR/$path" || true)
  if [ "$code" = 200 ]; then pass "GET /$path → 200"; else fail "GET /$path → 200" "got $code"; fi
done
metrics=$(curl -sS --max-time 30 "http://$ML_ADDR/metrics" || true)
if grep -q '^metald_' <<<"$metrics"; then pass "GET /metrics has metald_ series"; else
  fail "GET /metrics has metald_ series" "$(head -c 500 <<<"$metrics")"; fi

# --- 2. bad configs ------------------------------------------------------------------------
good=$(ml_spec_json "$kernel" "$initrd" "")
bad() { # bad NAME FIELD_REGEX JQ_EDIT: CreateVm with the good spec edited by JQ_EDIT.
  local body
  body=$(jq -c "$3" <<<"$good")
  expect_err "bad config: $1" invalid_argument "$2" CreateVm "$body"
}
bad "vcpu_count 0" "vcpu" '.config.cpu.vcpu_count = 0'
bad "vcpu_count 1000" "vcpu" '.config.cpu.vcpu_count = 1000'
bad "memory 1 TiB" "memory" '.config.memory.size_bytes = "1099511627776"'
bad "memory 0" "memory" '.config.memory.size_bytes = "0"'
bad "kernel outside the image roots" "kernel" '.config.boot.kernel_path = "/etc/passwd"'
bad "kernel path with .." "kernel" ".config.boot.kernel_path = \"$guest/../$(basename "$guest")/vmlinuz\""
bad "kernel path missing" "kernel" ".config.boot.kernel_path = \"$guest/no-such-kernel\""
bad "kernel path empty" "kernel" '.config.boot.kernel_path = ""'
bad "initrd outside the image roots" "initrd" '.config.boot.initrd_path = "/etc/hostname"'
bad "disk with .." "storage|path" \
  ".config.storage = [{id: \"d0\", path: \"$guest/../../etc/passwd\", read_only: true}]"
bad "disk missing" "storage|path" ".config.storage = [{id: \"d0\", path: \"$guest/nope.ext4\"}]"
bad "two root disks" "root" \
  ".config.storage = [{id: \"a\", path: \"$guest/initrd.img\", is_root: true, read_only: true},
                      {id: \"b\", path: \"$guest/vmlinuz\", is_root: true, read_only: true}]"
expect_ok "ListVms after the bad configs" ListVms '{}' || true
n=$(jq '.vms // [] | length' <<<"$ML_BODY")
if [ "$n" = 0 ]; then pass "bad configs left no VM record"; else fail "bad configs left no VM record" "$ML_BODY"; fi
left=$(find "$data/vms" -mindepth 1 2>/dev/null | head -20 || true)
if [ -z "$left" ]; then pass "bad configs left nothing under vms/"; else
  fail "bad configs left nothing under vms/" "$left"; fi
left=$(ml_pids_matching "$data/")
if [ -z "$left" ]; then pass "bad configs left no QEMU process"; else
  fail "bad configs left no QEMU process" "pids $left"; fi

# --- 3-5. lifecycle, forbidden transitions, tenancy ------------------------------------------
# The guest busy-loops for 20 s after READY, so that a paused guest is visible as vCPU threads
# that stop using CPU time.
expect_ok "CreateVm" CreateVm "$(ml_spec_json "$kernel" "$initrd" "metald.load=cpu:20")" ||
  die "CreateVm must work for the lifecycle"
id=$(ml_json '.vm_id // .vm.vm_id')
[ -n "$id" ] || die "CreateVm returns a vm_id" "$ML_BODY"
state=$(ml_json '.state // .vm.state')
check "CreateVm → CREATED ($id)" test "$state" = VM_STATE_CREATED
pid=$(vm_pid "$id")
check "CREATED VM has a live VMM process (pid $pid)" kill -0 "$pid"
check "its command line names the VM" grep -q -F -- "$id" "/proc/$pid/cmdline"
check "the guest has not started (no READY)" test "$(ml_count "$id" METALD-GUEST-READY)" = 0

expect_err "PauseVm on CREATED" failed_precondition "CREATED" PauseVm "{\"vm_id\":\"$id\"}"
expect_err "ResumeVm on CREATED" failed_precondition "CREATED" ResumeVm "{\"vm_id\":\"$id\"}"
expect_err "RebootVm on CREATED" failed_precondition "CREATED" RebootVm "{\"vm_id\":\"$id\"}"
expect_err "ShutdownVm on CREATED" failed_precondition "CREATED" ShutdownVm "{\"vm_id\":\"$id\"}"

expect_ok "BootVm" BootVm "{\"vm_id\":\"$id\"}" || die "BootVm must work for the lifecycle"
check "BootVm → RUNNING" test "$(ml_json .state)" = VM_STATE_RUNNING
if ml_wait_console "$id" METALD-GUEST-READY 1 "$pid"; then pass "guest prints READY after boot"; else
  die "guest prints READY after boot" "$(tail -n 20 "$(ml_console "$id")" 2>/dev/null)"; fi
expect_state "GetVmInfo → RUNNING" "$id" RUNNING
check "same VMM process after boot" test "$(vm_pid "$id")" = "$pid"

expect_err "BootVm on RUNNING" failed_precondition "RUNNING" BootVm "{\"vm_id\":\"$id\"}"
expect_err "ResumeVm on RUNNING" failed_precondition "RUNNING" ResumeVm "{\"vm_id\":\"$id\"}"
expect_err "DeleteVm on RUNNING without force" failed_precondition "RUNNING" DeleteVm "{\"vm_id\":\"$id\"}"

# Tenancy: bob sees nothing of alice's VM, on every RPC.
for m in GetVmInfo BootVm PauseVm ResumeVm RebootVm ShutdownVm DeleteVm; do
  expect_err "bob: $m on alice's VM" not_found "not found" "$m" "{\"vm_id\":\"$id\"}" bob
done
expect_err "bob: DeleteVm force on alice's VM" not_found "not found" DeleteVm "{\"vm_id\":\"$id\",\"force\":true}" bob
expect_err "bob: WaitVm on alice's VM" not_found "not found" WaitVm \
  "{\"vm_id\":\"$id\",\"states\":[\"VM_STATE_RUNNING\"],\"timeout\":\"5s\"}" bob
expect_err "GetVmInfo of a VM that never existed" not_found "not found" GetVmInfo '{"vm_id":"vm-00000000000000000000000000"}'
if expect_ok "bob: ListVms" ListVms '{}' bob; then
  check "bob's ListVms does not show alice's VM" test "$(jq --arg id "$id" '[.vms // [] | .[] | select(.vm_id == $id)] | length' <<<"$ML_BODY")" = 0
fi
if expect_ok "alice: ListVms" ListVms '{}'; then
  check "alice's ListVms shows her VM as RUNNING" test "$(jq -r --arg id "$id" '.vms // [] | .[] | select(.vm_id == $id) | .state' <<<"$ML_BODY")" = VM_STATE_RUNNING
fi
expect_state "alice's VM is still RUNNING after bob's calls" "$id" RUNNING
if expect_ok "WaitVm RUNNING" WaitVm "{\"vm_id\":\"$id\",\"states\":[\"VM_STATE_RUNNING\"],\"timeout\":\"10s\"}"; then
  check "WaitVm returns the VM in RUNNING" test "$(ml_json .vm.state)" = VM_STATE_RUNNING
fi

# Pause: the vCPU threads stop (no CPU time while the guest's 20 s CPU job would keep them busy),
# and the console stops too.
ml_wait_console "$id" "METALD-GUEST-LOAD-START cpu" 1 "$pid" || true
t0=$(ml_vcpu_ticks "$pid")
sleep 2
t1=$(ml_vcpu_ticks "$pid")
done_before=$(ml_count "$id" "METALD-GUEST-LOAD-DONE")
echo "     (running: vCPU threads used $((t1 - t0)) ticks in 2 s; load job done: $done_before)"
expect_ok "PauseVm" PauseVm "{\"vm_id\":\"$id\"}" || true
check "PauseVm → PAUSED" test "$(ml_json .state)" = VM_STATE_PAUSED
expect_state "GetVmInfo → PAUSED" "$id" PAUSED
console=$(ml_console "$id")
s0=$(stat -c %s "$console")
p0=$(ml_vcpu_ticks "$pid")
sleep 4
p1=$(ml_vcpu_ticks "$pid")
s1=$(stat -c %s "$console")
echo "     (paused: vCPU threads used $((p1 - p0)) ticks in 4 s)"
# A stopped TCG/KVM vCPU thread sleeps on a condition variable: it uses no CPU time at all; 3
# ticks (30 ms) of slack for the instant of the stop itself.
check "paused: vCPU threads use no CPU time ($((p1 - p0)) ticks in 4 s)" test $((p1 - p0)) -le 3
check "paused: the console does not grow" test "$s0" = "$s1"
if [ "$done_before" = 0 ]; then
  check "paused: the guest's CPU job does not finish" test "$(ml_count "$id" METALD-GUEST-LOAD-DONE)" = 0
fi
expect_state "still PAUSED" "$id" PAUSED
expect_err "PauseVm on PAUSED" failed_precondition "PAUSED" PauseVm "{\"vm_id\":\"$id\"}"
expect_err "RebootVm on PAUSED" failed_precondition "PAUSED" RebootVm "{\"vm_id\":\"$id\"}"
expect_err "DeleteVm on PAUSED without force" failed_precondition "PAUSED" DeleteVm "{\"vm_id\":\"$id\"}"

expect_ok "ResumeVm" ResumeVm "{\"vm_id\":\"$id\"}" || true
check "ResumeVm → RUNNING" test "$(ml_json .state)" = VM_STATE_RUNNING
if ml_wait_console "$id" "METALD-GUEST-LOAD-DONE cpu" 1 "$pid"; then
  pass "resumed: the guest runs on (its CPU job finishes)"
else
  fail "resumed: the guest runs on (its CPU job finishes)"
fi

ready_before=$(ml_count "$id" METALD-GUEST-READY)
expect_ok "RebootVm" RebootVm "{\"vm_id\":\"$id\"}" || true
check "RebootVm → RUNNING" test "$(ml_json .state)" = VM_STATE_RUNNING
if ml_wait_console "$id" METALD-GUEST-READY $((ready_before + 1)) "$pid"; then
  pass "guest prints READY again after the reboot ($((ready_before + 1)) in total)"
else
  fail "guest prints READY again after the reboot"
fi
check "reboot kept the VMM process" test "$(vm_pid "$id")" = "$pid"
ml_rpc GetVmInfo "{\"vm_id\":\"$id\"}"
inc1=$(ml_json .vm.incarnation)

expect_ok "ShutdownVm graceful" ShutdownVm "{\"vm_id\":\"$id\",\"timeout\":\"180s\"}" || true
check "ShutdownVm → STOPPED" test "$(ml_json .state)" = VM_STATE_STOPPED
check "ShutdownVm reports graceful=true" test "$(jq -r '.graceful // false' <<<"$ML_BODY")" = true
check "the guest printed POWEROFF" test "$(ml_count "$id" METALD-GUEST-POWEROFF)" -ge 1
expect_state "GetVmInfo → STOPPED" "$id" STOPPED
check "STOPPED: the VMM process is gone" bash -c "! kill -0 $pid 2>/dev/null"
check "STOPPED: process_id is 0" test "$(vm_pid "$id")" = 0
expect_err "PauseVm on STOPPED" failed_precondition "STOPPED" PauseVm "{\"vm_id\":\"$id\"}"
expect_err "ResumeVm on STOPPED" failed_precondition "STOPPED" ResumeVm "{\"vm_id\":\"$id\"}"

expect_ok "BootVm again (STOPPED → RUNNING)" BootVm "{\"vm_id\":\"$id\"}" || true
check "BootVm again → RUNNING" test "$(ml_json .state)" = VM_STATE_RUNNING
pid2=$(vm_pid "$id")
check "a new VMM process ($pid2, was $pid)" test "$pid2" != 0 -a "$pid2" != "$pid"
ml_rpc GetVmInfo "{\"vm_id\":\"$id\"}"
inc2=$(ml_json .vm.incarnation)
check "incarnation increments ($inc1 → $inc2)" test "${inc2:-0}" -gt "${inc1:-0}"
if ml_wait_ready_since_poweroff "$id" "$pid2"; then pass "guest prints READY after booting again"; else
  fail "guest prints READY after booting again"; fi

expect_ok "DeleteVm force on RUNNING" DeleteVm "{\"vm_id\":\"$id\",\"force\":true}" || true
no_leftovers "after delete" "$id"
check "after delete: the VMM process is gone" bash -c "! kill -0 $pid2 2>/dev/null"
expect_ok "ListVms after delete" ListVms '{}' || true
check "ListVms after delete is empty" test "$(jq '.vms // [] | length' <<<"$ML_BODY")" = 0

# --- 6. restart -----------------------------------------------------------------------------
expect_ok "restart: CreateVm (stays CREATED)" CreateVm "$(ml_spec_json "$kernel" "$initrd" "")" ||
  die "restart: CreateVm"
idc=$(ml_json '.vm_id // .vm.vm_id')
pidc=$(vm_pid "$idc")
expect_ok "restart: CreateVm (to be STOPPED)" CreateVm "$(ml_spec_json "$kernel" "$initrd" "")" ||
  die "restart: CreateVm"
ids=$(ml_json '.vm_id // .vm.vm_id')
pids_=$(vm_pid "$ids")
expect_ok "restart: BootVm" BootVm "{\"vm_id\":\"$ids\"}" || true
ml_wait_console "$ids" METALD-GUEST-READY 1 "$pids_" || fail "restart: guest $ids READY"
expect_ok "restart: ShutdownVm graceful" ShutdownVm "{\"vm_id\":\"$ids\",\"timeout\":\"180s\"}" || true
expect_state "restart: $ids STOPPED before the restart" "$ids" STOPPED
expect_state "restart: $idc CREATED before the restart" "$idc" CREATED

ml_stop_metald TERM
check "metald exits 0 on SIGTERM (got $ML_RC)" test "$ML_RC" = 0
check "the CREATED VM's QEMU survives metald's exit" kill -0 "$pidc"

ml_start_metald "$metald" "$data" "$guest" || die "metald restarts on the same data dir"
pass "metald restarted on $ML_ADDR"
expect_state "after restart: $idc is CREATED" "$idc" CREATED
check "after restart: $idc has the same VMM process (re-adopted)" test "$(vm_pid "$idc")" = "$pidc"
expect_state "after restart: $ids is STOPPED" "$ids" STOPPED
if expect_ok "after restart: ListVms" ListVms '{}'; then
  check "after restart: ListVms shows both VMs" test "$(jq -r '[.vms // [] | .[].vm_id] | sort | join(" ")' <<<"$ML_BODY")" = "$(printf '%s\n' "$idc" "$ids" | sort | paste -sd' ')"
fi
expect_ok "after restart: BootVm the CREATED VM" BootVm "{\"vm_id\":\"$idc\"}" || true
check "after restart: BootVm → RUNNING" test "$(ml_json .state)" = VM_STATE_RUNNING
if ml_wait_console "$idc" METALD-GUEST-READY 1 "$pidc"; then
  pass "after restart: the re-adopted guest boots (READY)"
else
  fail "after restart: the re-adopted guest boots (READY)"
fi
expect_ok "after restart: BootVm the STOPPED VM" BootVm "{\"vm_id\":\"$ids\"}" || true
check "after restart: STOPPED VM boots → RUNNING" test "$(ml_json .state)" = VM_STATE_RUNNING
if ml_wait_ready_since_poweroff "$ids" "$(vm_pid "$ids")"; then
  pass "after restart: the stopped guest boots again (READY)"
else
  fail "after restart: the stopped guest boots again (READY)"
fi
expect_ok "after restart: ShutdownVm force" ShutdownVm "{\"vm_id\":\"$ids\",\"force\":true}" || true
check "forced ShutdownVm → STOPPED" test "$(ml_json .state)" = VM_STATE_STOPPED
check "forced ShutdownVm reports graceful=false" test "$(jq -r '.graceful // false' <<<"$ML_BODY")" = false
expect_ok "DeleteVm a STOPPED VM (no force)" DeleteVm "{\"vm_id\":\"$ids\"}" || true
no_leftovers "after delete (STOPPED)" "$ids"
expect_ok "DeleteVm force a RUNNING VM" DeleteVm "{\"vm_id\":\"$idc\",\"force\":true}" || true
no_leftovers "after delete (RUNNING, force)" "$idc"
left=$(ml_pids_matching "$data/")
check "no QEMU process left under the data dir" test -z "$left"
ml_stop_metald TERM
check "metald exits 0 on SIGTERM at the end (got $ML_RC)" test "$ML_RC" = 0

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

#!/usr/bin/env bash
# The VM lifecycle against a real metald and a real QEMU guest, driven by `buf curl` (connect-go
# inside, a client nobody here wrote), once per protocol variant:
#   connect over HTTP/1.1, connect over h2c, grpc over h2c, grpc-web over HTTP/1.1.
# (buf curl always encodes the request as binary protobuf — its -d JSON is converted with the
# schema — so these are the proto codec; Connect with JSON is driven by curl in
# tests/system/metald_e2e_test.sh and by connect-node in vm_lifecycle_connect_node_test.mjs.)
#
# Each variant: CreateVm → BootVm → WaitVm RUNNING → guest READY → PauseVm → ResumeVm →
# RebootVm → READY again → ShutdownVm (graceful, true) → BootVm → READY → DeleteVm (force) →
# GetVmInfo not_found; plus ResumeVm on a RUNNING VM → failed_precondition naming RUNNING.
#
# Environment (run_with_metald.sh sets the first three): METALD_ADDR, METALD_DATA_DIR,
# METALD_GUEST_DIR; METALD_DESCRIPTORS = path of metald_proto_v1.binpb (required).
# Exit 0 only when every check passed; the last line is "N passed, M failed".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
addr=${METALD_ADDR:?METALD_ADDR must be set (run_with_metald.sh)}
data=${METALD_DATA_DIR:?METALD_DATA_DIR must be set}
guest=${METALD_GUEST_DIR:?METALD_GUEST_DIR must be set}
schema=${METALD_DESCRIPTORS:?METALD_DESCRIPTORS must be set (metald_proto_v1.binpb)}
buf=$here/node_modules/@bufbuild/buf-linux-x64/bin/buf
[ -x "$buf" ] || buf=$here/node_modules/.bin/buf
[ -x "$buf" ] || { echo "FATAL: buf missing: run tools/bootstrap.sh" >&2; exit 2; }
[ -f "$schema" ] || { echo "FATAL: descriptor set $schema missing" >&2; exit 2; }
BOOT_TIMEOUT=${METALD_E2E_BOOT_TIMEOUT:-300}

svc=http://$addr/metald.v1.VmService
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck source=tests/lib/results.sh
source "$here/../lib/results.sh"

# bufcall METHOD JSON [CUSTOMER]: buf curl with the current variant; stdout in $out (JSON, keys in
# buf's lowerCamelCase), the error JSON in $err, exit code in $rc.
bufcall() {
  local customer=${3:-alice}
  local -a flags=(curl --schema "$schema" --protocol "$protocol" -H
    "Authorization: Bearer dev_customer_$customer")
  [ "$h2" = 1 ] && flags+=(--http2-prior-knowledge)
  rc=0
  timeout 600 "$buf" "${flags[@]}" -d "$2" "$svc/$1" >"$work/out" 2>"$work/err" || rc=$?
  out=$(cat "$work/out")
  err=$(grep -v '^buf: ' "$work/err" || true)
}
# expect_call NAME METHOD JSON: the call succeeds.
expect_call() {
  bufcall "$2" "$3"
  if [ "$rc" = 0 ]; then pass "$name: $1"; return 0; fi
  fail "$name: $1" "exit $rc" "$err"
  return 1
}
# expect_field NAME JQ EXPECTED: the last answer has JQ == EXPECTED.
expect_field() {
  local got
  got=$(jq -r "$2 // empty" <<<"$out" 2>/dev/null || true)
  if [ "$got" = "$3" ]; then pass "$name: $1"; else fail "$name: $1" "$2 is '$got', want '$3'" "$out"; fi
}
# expect_error NAME CODE REGEX METHOD JSON [CUSTOMER]
expect_error() {
  bufcall "$4" "$5" "${6:-alice}"
  local code msg
  code=$(jq -r '.code // empty' <<<"$err" 2>/dev/null || true)
  msg=$(jq -r '.message // empty' <<<"$err" 2>/dev/null || true)
  if [ "$rc" != 0 ] && [ "$code" = "$2" ] && grep -qiE -- "$3" <<<"$msg"; then
    pass "$name: $1 ($code: $msg)"
  else
    fail "$name: $1" "exit $rc, want code $2 with /$3/" "$err"
  fi
}
# ready_count ID: READY lines after the last POWEROFF on the VM's console.
ready_count() {
  local f=$data/vms/$1/console.log
  [ -f "$f" ] || { echo 0; return; }
  tr -d '\r' <"$f" | awk '/METALD-GUEST-POWEROFF/ { n = 0 } /METALD-GUEST-READY/ { n++ } END { print n + 0 }'
}
# wait_ready NAME ID N: the current boot printed READY N times.
wait_ready() {
  local deadline=$((SECONDS + BOOT_TIMEOUT))
  while [ "$(ready_count "$2")" -lt "$3" ]; do
    if [ $SECONDS -ge $deadline ]; then
      fail "$name: $1" "no READY x$3 within ${BOOT_TIMEOUT}s" \
        "$(tail -n 15 "$data/vms/$2/console.log" 2>/dev/null)"
      return 1
    fi
    sleep 0.2
  done
  pass "$name: $1"
}

kernel=$guest/vmlinuz
initrd=$guest/initrd.img
spec=$(jq -cn --arg k "$kernel" --arg i "$initrd" \
  '{config: {cpu: {vcpuCount: 1}, memory: {sizeBytes: "268435456"},
             boot: {kernelPath: $k, initrdPath: $i}}}')

for variant in "connect 0" "connect 1" "grpc 1" "grpcweb 0"; do
  read -r protocol h2 <<<"$variant"
  name="buf $protocol $([ "$h2" = 1 ] && echo h2c || echo http/1.1)"

  expect_call "CreateVm" CreateVm "$spec" || continue
  id=$(jq -r '.vmId // .vm.vmId // empty' <<<"$out")
  expect_field "CreateVm state" '.state // .vm.state' VM_STATE_CREATED
  j="{\"vmId\":\"$id\"}"

  expect_call "BootVm" BootVm "$j" && expect_field "BootVm state" .state VM_STATE_RUNNING
  expect_call "WaitVm RUNNING" WaitVm "{\"vmId\":\"$id\",\"states\":[\"VM_STATE_RUNNING\"],\"timeout\":\"300s\"}" &&
    expect_field "WaitVm state" .vm.state VM_STATE_RUNNING
  wait_ready "guest READY after BootVm" "$id" 1 || true
  expect_error "ResumeVm on RUNNING" failed_precondition RUNNING ResumeVm "$j"
  expect_error "GetVmInfo of another customer's VM" not_found "not found" GetVmInfo "$j" bob

  expect_call "PauseVm" PauseVm "$j" && expect_field "PauseVm state" .state VM_STATE_PAUSED
  expect_call "GetVmInfo while paused" GetVmInfo "$j" && expect_field "GetVmInfo state" .vm.state VM_STATE_PAUSED
  expect_call "ResumeVm" ResumeVm "$j" && expect_field "ResumeVm state" .state VM_STATE_RUNNING
  expect_call "RebootVm" RebootVm "$j" && expect_field "RebootVm state" .state VM_STATE_RUNNING
  wait_ready "guest READY again after RebootVm" "$id" 2 || true

  expect_call "ShutdownVm" ShutdownVm "{\"vmId\":\"$id\",\"timeout\":\"180s\"}" &&
    expect_field "ShutdownVm state" .state VM_STATE_STOPPED && expect_field "ShutdownVm graceful" .graceful true
  expect_call "BootVm again" BootVm "$j" && expect_field "BootVm again state" .state VM_STATE_RUNNING
  wait_ready "guest READY after BootVm again" "$id" 1 || true

  expect_call "DeleteVm" DeleteVm "{\"vmId\":\"$id\",\"force\":true}"
  expect_error "GetVmInfo after DeleteVm" not_found "not found" GetVmInfo "$j"
  if [ -e "$data/vms/$id" ]; then fail "$name: VM directory removed" "$(ls -la "$data/vms/$id")"; else
    pass "$name: VM directory removed"; fi
done

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

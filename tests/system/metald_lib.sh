# shellcheck shell=bash disable=SC2034  # ML_* globals are read by the scripts sourcing this.
# Helpers for tests and scripts that drive a real metald binary over its public API
# (metald.v1.VmService, Connect protocol with JSON, sent with curl). Sourced, not run:
#
#   source tests/system/metald_lib.sh
#   ml_init "$tmp"                      # work directory (holds data dirs, logs, RPC replies)
#   ml_start_metald "$metald" "$data_dir" "$guest_dir"  # sets ML_ADDR, ML_PID
#   ml_rpc CreateVm "$json" alice       # sets ML_HTTP, ML_BODY (snake_case keys), ML_CODE
#   ml_stop_metald                      # SIGTERM, waits (SIGKILL after 30 s)
#
# Every reply is normalised to snake_case keys (the server may emit proto3 JSON's lowerCamelCase
# or the original field names; both are valid proto3 JSON), so callers can write
# `jq -r .vm.vm_id`. Needs curl and jq.
#
# Console helpers read a VM's serial console log "<data dir>/vms/<id>/console.log" (the QEMU
# backend's default, metald/backend/qemu/qemu_backend.cc).

# Generous bounds: one TCG boot takes ~2 s idle and 20-30 s on a saturated 2-core host.
ML_BOOT_TIMEOUT=${METALD_E2E_BOOT_TIMEOUT:-300}
ML_RPC_TIMEOUT=${METALD_E2E_RPC_TIMEOUT:-300}

ML_WORK=
ML_ADDR=
ML_PID=
ML_LOG=
ML_DATA=
ML_HTTP=
ML_BODY=
ML_CODE=
ML_MESSAGE=
ML_RC=

# ml_init DIR: where replies and logs go.
ml_init() {
  ML_WORK=$1
  mkdir -p "$ML_WORK"
}

# ml_snake: stdin JSON → the same JSON with every object key in snake_case.
ml_snake() {
  jq -c 'walk(if type == "object" then with_entries(.key |= gsub("(?<u>[A-Z])"; "_\(.u | ascii_downcase)")) else . end)' 2>/dev/null
}

# ml_start_metald BINARY DATA_DIR IMAGE_ROOT [EXTRA FLAGS...]: starts metald in the background on
# 127.0.0.1:0 with dev tokens, waits for its ready file (up to 120 s). Sets ML_ADDR (host:port),
# ML_PID, ML_LOG (its stdout+stderr), ML_DATA. Returns 1 (with the log on stderr) when it exits
# or does not become ready.
ml_start_metald() {
  local bin=$1 data=$2 image_root=$3
  shift 3
  local n=0
  while [ -e "$ML_WORK/metald.$n.log" ]; do n=$((n + 1)); done
  ML_LOG=$ML_WORK/metald.$n.log
  ML_DATA=$data
  local ready=$ML_WORK/metald.$n.ready
  rm -f "$ready"
  mkdir -p "$data"
  "$bin" --listen 127.0.0.1:0 --data-dir "$data" --backend qemu --dev-tokens \
    --image-root "$image_root" --accel "${METALD_E2E_ACCEL:-tcg}" --ready-file "$ready" \
    --log-format text "$@" </dev/null >"$ML_LOG" 2>&1 &
  ML_PID=$!
  local deadline=$((SECONDS + 120))
  ML_ADDR=
  while [ -z "$ML_ADDR" ]; do
    if [ -s "$ready" ]; then
      # One address per line; take the first TCP one, with or without a scheme.
      ML_ADDR=$(sed -e 's#^[a-z]*://##' -e 's#/$##' "$ready" | grep -E '^[0-9.]+:[0-9]+$|^\[.*\]:[0-9]+$' | head -n1 || true)
    fi
    [ -n "$ML_ADDR" ] && break
    if ! kill -0 "$ML_PID" 2>/dev/null; then
      echo "metald exited before writing its ready file; log:" >&2
      tail -n 50 "$ML_LOG" >&2
      ML_PID=
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "metald wrote no usable ready file within 120 s (ready file: $(cat "$ready" 2>/dev/null)); log:" >&2
      tail -n 50 "$ML_LOG" >&2
      return 1
    fi
    sleep 0.1
  done
  return 0
}

# ml_stop_metald [SIGNAL]: signals metald (default TERM) and waits for it; SIGKILL after 30 s.
# Sets ML_RC to its exit status. Not in a subshell: it must `wait` for its own child.
ml_stop_metald() {
  local sig=${1:-TERM} rc=0
  ML_RC=none
  [ -n "$ML_PID" ] || return 0
  kill "-$sig" "$ML_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$ML_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  if kill -0 "$ML_PID" 2>/dev/null; then
    echo "metald ignored SIG$sig for 30 s; killing it" >&2
    kill -KILL "$ML_PID" 2>/dev/null || true
  fi
  wait "$ML_PID" 2>/dev/null || rc=$?
  ML_PID=
  ML_RC=$rc
}

# ml_rpc METHOD JSON [CUSTOMER|-] [TOKEN]: one Connect unary call with JSON. CUSTOMER "x" sends
# "Bearer dev_customer_x"; "-" sends no Authorization header; TOKEN overrides the whole bearer
# value. Sets ML_HTTP (status, 000 = no answer), ML_BODY (snake_case JSON, or the raw body when
# it is not JSON), ML_CODE (the Connect error code, "" on success) and ML_MESSAGE.
ml_rpc() {
  local method=$1 body=$2 customer=${3:-alice} token=${4:-}
  local -a auth=()
  if [ -n "$token" ]; then
    auth=(-H "Authorization: Bearer $token")
  elif [ "$customer" != - ]; then
    auth=(-H "Authorization: Bearer dev_customer_$customer")
  fi
  local out=$ML_WORK/rpc.out
  ML_HTTP=$(curl -sS -o "$out" -w '%{http_code}' --max-time "$ML_RPC_TIMEOUT" \
    -H 'Content-Type: application/json' "${auth[@]}" --data-binary "$body" \
    "http://$ML_ADDR/metald.v1.VmService/$method" 2>"$ML_WORK/rpc.err") || true
  [ -n "$ML_HTTP" ] || ML_HTTP=000
  ML_BODY=$(ml_snake <"$out")
  [ -n "$ML_BODY" ] || ML_BODY=$(cat "$out")
  ML_CODE=
  ML_MESSAGE=
  if [ "$ML_HTTP" != 200 ]; then
    ML_CODE=$(jq -r '.code // empty' <<<"$ML_BODY" 2>/dev/null || true)
    ML_MESSAGE=$(jq -r '.message // empty' <<<"$ML_BODY" 2>/dev/null || true)
    [ -n "$ML_CODE" ] || ML_CODE="http_$ML_HTTP"
  fi
}

# ml_json JQ_FILTER: applies a jq filter to ML_BODY, prints raw output ("" for null).
ml_json() {
  jq -r "$1 // empty" <<<"$ML_BODY" 2>/dev/null || true
}

# ml_spec_json KERNEL INITRD ARGS [VCPUS] [MEMORY_MIB]: a CreateVmRequest body.
ml_spec_json() {
  local vcpus=${4:-1} mib=${5:-256}
  jq -cn --arg k "$1" --arg i "$2" --arg a "$3" --argjson v "$vcpus" \
    --arg m "$((mib * 1024 * 1024))" \
    '{config: {cpu: {vcpu_count: $v}, memory: {size_bytes: $m},
               boot: {kernel_path: $k, initrd_path: $i, kernel_args: $a},
               console: {enabled: true}}}'
}

# ml_console VM_ID: path of the VM's console log.
ml_console() { echo "$ML_DATA/vms/$1/console.log"; }

# ml_count VM_ID TEXT: how many console lines contain TEXT.
ml_count() {
  local f
  f=$(ml_console "$1")
  if [ -f "$f" ]; then tr -d '\r' <"$f" | grep -c -F -- "$2" || true; else echo 0; fi
}

# ml_ready_since_poweroff VM_ID: READY lines after the last POWEROFF line (the console file may
# or may not be truncated when a new VMM process starts; this counts the current boot either way).
ml_ready_since_poweroff() {
  local f
  f=$(ml_console "$1")
  [ -f "$f" ] || { echo 0; return; }
  tr -d '\r' <"$f" | awk '/METALD-GUEST-POWEROFF/ { n = 0 } /METALD-GUEST-READY/ { n++ } END { print n + 0 }'
}

# ml_wait_console VM_ID TEXT N [PID]: waits until TEXT is on the console N times. Returns 1 on
# timeout or when PID (the VMM) dies first.
ml_wait_console() {
  local id=$1 text=$2 n=$3 pid=${4:-} deadline=$((SECONDS + ML_BOOT_TIMEOUT))
  while [ "$(ml_count "$id" "$text")" -lt "$n" ]; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      echo "VMM $pid of $id exited before '$text' x$n" >&2
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "no '$text' x$n on the console of $id within ${ML_BOOT_TIMEOUT}s" >&2
      return 1
    fi
    sleep 0.2
  done
}

# ml_wait_ready_since_poweroff VM_ID [PID]: waits for the current boot's READY line.
ml_wait_ready_since_poweroff() {
  local id=$1 pid=${2:-} deadline=$((SECONDS + ML_BOOT_TIMEOUT))
  while [ "$(ml_ready_since_poweroff "$id")" -lt 1 ]; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      echo "VMM $pid of $id exited before READY" >&2
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "no READY on the console of $id within ${ML_BOOT_TIMEOUT}s" >&2
      return 1
    fi
    sleep 0.2
  done
}

# ml_pids_matching TEXT: pids (other than ours) whose command line contains TEXT.
ml_pids_matching() {
  local d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ] && continue
    if tr '\0' ' ' 2>/dev/null <"$d/cmdline" | grep -q -F -- "$1"; then
      # Skip our own helpers (grep, tr, this subshell): only count qemu/metald processes.
      case "$(cat "$d/comm" 2>/dev/null)" in
        qemu*|metald*) echo "$pid" ;;
      esac
    fi
  done
}

# ml_vcpu_ticks PID: utime+stime (clock ticks) of the VMM's vCPU threads ("CPU n/TCG" or
# "CPU n/KVM" with -name debug-threads=on); of the whole process when no thread is named so.
ml_vcpu_ticks() {
  local pid=$1 t total=0 found=0 stat rest
  for t in /proc/"$pid"/task/*; do
    case "$(cat "$t/comm" 2>/dev/null)" in
      *"/TCG"|*"/KVM")
        stat=$(cat "$t/stat" 2>/dev/null) || continue
        rest=${stat##*) }
        # Fields after "(comm) ": state is 1st; utime is field 14 overall = 12th here.
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
        found=1
        ;;
    esac
  done
  if [ $found = 0 ]; then
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || { echo -1; return; }
    rest=${stat##*) }
    read -r -a f <<<"$rest"
    total=$((f[11] + f[12]))
  fi
  echo "$total"
}

#!/usr/bin/env bash
# run_rpc_bench.sh BUILD_DIR [OUT_DIR]: the RPC-layer benchmarks recorded in BENCHMARKS.md.
#
#   grpc:    unary GetVmInfo over gRPC h2c, h2load, against rpc_bench_server (handler pool, and
#            --nonblocking: inline on the I/O thread) and the grpc++ synchronous anchor.
#   connect: Connect JSON GetVmInfo over HTTP/1.1, h2load --h1 (one request in flight per
#            connection), against rpc_bench_server (both modes) and the bare Beast anchor.
#
# Every server runs pinned to SERVER_CPU, h2load to CLIENT_CPU, with identical client settings.
# Each (benchmark, server) pair runs REPS times, servers alternating run by run (the order is
# reversed every other repetition), each run on a freshly started server. Before each run the
# script checks one call by hand (grpc-status 0 and the framed size for gRPC; HTTP 200 and the
# JSON size for Connect), then warms up with a count-based h2load run whose every response must
# succeed; the measured run is timing-based (-D DURATION after --warm-up-time WARMUP) and must
# have no failed, errored or timed-out request. p50/p99 come from h2load's per-request log
# (--log-file: microseconds from request start to end of response), nearest rank.
#
# Output: OUT_DIR/runs.tsv (one line per run), OUT_DIR/*.txt and *.log (h2load's output and
# per-request logs), and a markdown summary on stdout: per server the median and best req/s over
# the repetitions, median p50/p99, and ratios to the benchmark's anchor: the median of the
# per-repetition ratios (each server against the anchor run beside it, under nearly the same
# load) and best over best (on a shared machine the best run is the least disturbed one).
# SUMMARY_ONLY=1 re-prints the summary of an existing OUT_DIR/runs.tsv without running anything.
#
# Tunables (environment): REPS=3 DURATION=10 WARMUP=2 CLIENTS=16 STREAMS=8 THREADS=1 SERVER_CPU=0
# CLIENT_CPU=1 IO_THREADS=1 HANDLER_THREADS=16 WARM_REQUESTS=2000 NICE=-10.

set -euo pipefail

BUILD_DIR=${1:?usage: run_rpc_bench.sh BUILD_DIR [OUT_DIR]}
OUT_DIR=${2:-$(mktemp -d /tmp/rpc-bench.XXXXXX)}
REPS=${REPS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CLIENTS=${CLIENTS:-16}
STREAMS=${STREAMS:-8}
THREADS=${THREADS:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
IO_THREADS=${IO_THREADS:-1}
HANDLER_THREADS=${HANDLER_THREADS:-16}
WARM_REQUESTS=${WARM_REQUESTS:-2000}
# Priority of servers and client: below zero they win the CPU from other users' batch jobs, which
# shrinks (not removes) the noise of a shared, loaded machine. Same for every server.
NICE=${NICE:--10}

VM_ID=vm-7f3c9a2e4b1d4e0f8a6b5c3d2e1f0a9b  # bench/vm_info_fixture.h kBenchVmId
PATH_RPC=/metald.v1.VmService/GetVmInfo
BIN=$BUILD_DIR/bench
for tool in h2load nghttp curl taskset; do
  command -v $tool > /dev/null || { echo "missing $tool" >&2; exit 1; }
done
# BENCHES selects benchmarks (default both): BENCHES=connect needs no grpc++ server.
BENCHES=${BENCHES:-grpc connect}
for bin in rpc_bench_server beast_bench_server $([[ " $BENCHES " == *" grpc "* ]] && echo grpcpp_bench_server); do
  [[ -x $BIN/$bin ]] || { echo "missing $BIN/$bin (build it first)" >&2; exit 1; }
done
mkdir -p "$OUT_DIR"

# Request bodies: GetVmInfoRequest{vm_id} as proto in a gRPC frame, and as Connect JSON.
(( ${#VM_ID} < 128 ))
printf "\\x00\\x00\\x00\\x00\\x$(printf %02x $(( ${#VM_ID} + 2 )))\\x0a\\x$(printf %02x ${#VM_ID})%s" \
  "$VM_ID" > "$OUT_DIR/request.grpc"
printf '{"vmId":"%s"}' "$VM_ID" > "$OUT_DIR/request.json"

# client CMD...: runs the load generator at the servers' priority.
client() { nice -n "$NICE" "$@"; }

SERVER_PID=
SERVER_ADDR=
stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2> /dev/null || true
    wait "$SERVER_PID" 2> /dev/null || true
    SERVER_PID=
  fi
}
trap stop_server EXIT

# start_server NAME: starts the named server pinned to SERVER_CPU; sets SERVER_PID/SERVER_ADDR.
start_server() {
  local cmd
  case $1 in
    ours) cmd=("$BIN/rpc_bench_server" --io-threads "$IO_THREADS"
               --handler-threads "$HANDLER_THREADS") ;;
    ours-inline) cmd=("$BIN/rpc_bench_server" --io-threads "$IO_THREADS"
                      --handler-threads "$HANDLER_THREADS" --nonblocking) ;;
    grpcpp) cmd=("$BIN/grpcpp_bench_server") ;;
    beast) cmd=("$BIN/beast_bench_server" --io-threads "$IO_THREADS") ;;
  esac
  local out=$OUT_DIR/server-$1.out
  nice -n "$NICE" taskset -c "$SERVER_CPU" "${cmd[@]}" --listen 127.0.0.1:0 > "$out" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    SERVER_ADDR=$(awk '/^listening/ {print $2; exit}' "$out")
    [[ -n $SERVER_ADDR ]] && return 0
    sleep 0.1
  done
  echo "$1 did not start:" >&2
  cat "$out" >&2
  exit 1
}

# server_bytes NAME KEY: "proto_bytes"/"json_bytes" as the server printed it.
server_bytes() { awk -v k="$2" '$1 == k {print $2}' "$OUT_DIR/server-$1.out"; }

# The response sizes every server must print alike (the first server started sets them).
WANT_PROTO=
WANT_JSON=

# check_call BENCH NAME: one call by hand; fails the script unless it fully succeeded with the
# fixture's size, and that size is the same as every other server's.
check_call() {
  if [[ $1 == grpc ]]; then
    local size trace
    size=$(server_bytes "$2" proto_bytes)
    : "${WANT_PROTO:=$size}"
    trace=$(nghttp -v -H 'content-type: application/grpc' -H 'te: trailers' \
      -d "$OUT_DIR/request.grpc" "http://$SERVER_ADDR$PATH_RPC" 2>&1 | tr -cd '[:print:]\n')
    if [[ $size != "$WANT_PROTO" ]] || ! grep -q 'grpc-status: 0' <<< "$trace" ||
       ! grep -q "recv DATA frame <length=$(( size + 5 ))," <<< "$trace"; then
      echo "$2: gRPC check failed (fixture $size bytes, want $WANT_PROTO):" >&2
      echo "$trace" >&2
      return 1
    fi
  else
    local size code
    size=$(server_bytes "$2" json_bytes)
    : "${WANT_JSON:=$size}"
    code=$(curl -s -o "$OUT_DIR/check-$2.json" -w '%{http_code}' -X POST \
      -H 'content-type: application/json' -H 'connect-protocol-version: 1' \
      --data-binary "@$OUT_DIR/request.json" "http://$SERVER_ADDR$PATH_RPC")
    if [[ $code != 200 || $size != "$WANT_JSON" ||
          $(stat -c %s "$OUT_DIR/check-$2.json") != "$size" ]]; then
      echo "$2: Connect check failed: HTTP $code, $size bytes, want $WANT_JSON" >&2
      return 1
    fi
  fi
}

# client_args BENCH: sets CLIENT_ARGS, the client settings, identical for every server of a
# benchmark.
client_args() {
  if [[ $1 == grpc ]]; then
    CLIENT_ARGS=(-c "$CLIENTS" -m "$STREAMS" -t "$THREADS" -d "$OUT_DIR/request.grpc"
                 -H 'content-type: application/grpc' -H 'te: trailers')
  else
    CLIENT_ARGS=(--h1 -c "$CLIENTS" -m 1 -t "$THREADS" -d "$OUT_DIR/request.json"
                 -H 'content-type: application/json' -H 'connect-protocol-version: 1')
  fi
}

# all_succeeded FILE [N]: h2load's summary shows every request done, succeeded and 2xx (and
# N of them). Its line: "requests: T total, S started, D done, OK succeeded, F failed, E errored,
# X timeout"; then "status codes: C 2xx, ...".
all_succeeded() {
  awk -v n="${2:-}" '/^requests:/ {
      ok = ($2 == $8 && $6 == $8 && $8 > 0 && $10 == 0 && $12 == 0 && $14 == 0 &&
            (n == "" || $8 == n)); succeeded = $8
    } /^status codes:/ { codes = $3 } END { exit !(ok && codes == succeeded) }' "$1"
}

# percentile P: nearest-rank percentile of the numbers on stdin.
percentile() { sort -n | awk -v p="$1" '{ v[NR] = $1 } END { i = int(p * NR); if (i < p * NR) i++;
  if (i < 1) i = 1; print v[i] }'; }

run_one() {  # run_one BENCH NAME REP
  local bench=$1 name=$2 rep=$3 tag="$1-$2-$3" load rps p50 p99 mean
  start_server "$name"
  check_call "$bench" "$name"
  # Warm-up: count-based, every response must succeed.
  client_args "$bench"
  client taskset -c "$CLIENT_CPU" h2load -n "$WARM_REQUESTS" "${CLIENT_ARGS[@]}" \
    "http://$SERVER_ADDR$PATH_RPC" > "$OUT_DIR/warm-$tag.txt" 2>&1
  all_succeeded "$OUT_DIR/warm-$tag.txt" "$WARM_REQUESTS" \
    || { echo "$tag: warm-up had failures" >&2; cat "$OUT_DIR/warm-$tag.txt" >&2; exit 1; }
  load=$(cut -d' ' -f1 /proc/loadavg)
  client taskset -c "$CLIENT_CPU" h2load -D "$DURATION" --warm-up-time "$WARMUP" \
    "${CLIENT_ARGS[@]}" --log-file "$OUT_DIR/$tag.log" \
    "http://$SERVER_ADDR$PATH_RPC" > "$OUT_DIR/$tag.txt" 2>&1
  stop_server
  all_succeeded "$OUT_DIR/$tag.txt" \
    || { echo "$tag: failed requests" >&2; grep -E 'requests:|status codes' "$OUT_DIR/$tag.txt" >&2; exit 1; }
  rps=$(awk '/^finished in/ {print $4}' "$OUT_DIR/$tag.txt")
  mean=$(awk '$2 ~ /^2/ { sum += $3; n++ } END { printf "%.0f", sum / n }' "$OUT_DIR/$tag.log")
  p50=$(awk '$2 ~ /^2/ {print $3}' "$OUT_DIR/$tag.log" | percentile 0.50)
  p99=$(awk '$2 ~ /^2/ {print $3}' "$OUT_DIR/$tag.log" | percentile 0.99)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$bench" "$name" "$rep" "$rps" "$p50" "$p99" "$mean" \
    "$load" >> "$OUT_DIR/runs.tsv"
  printf '%-8s %-12s rep %s: %10s req/s  p50 %6s us  p99 %6s us  mean %6s us  load %s\n' \
    "$bench" "$name" "$rep" "$rps" "$p50" "$p99" "$mean" "$load" >&2
}

if [[ ${SUMMARY_ONLY:-0} != 1 ]]; then
  printf 'bench\tserver\trep\trps\tp50_us\tp99_us\tmean_us\tload1\n' > "$OUT_DIR/runs.tsv"
  echo "out: $OUT_DIR; $(nproc) cpus; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  for rep in $(seq "$REPS"); do
    for bench in $BENCHES; do
      if [[ $bench == grpc ]]; then servers=(ours ours-inline grpcpp); else servers=(ours ours-inline beast); fi
      if (( rep % 2 == 0 )); then servers=("${servers[2]}" "${servers[1]}" "${servers[0]}"); fi
      for name in "${servers[@]}"; do run_one "$bench" "$name" "$rep"; done
    done
  done
fi

# Summary. Raw figures: median and best over the repetitions. Ratios: per repetition, ours over
# the anchor run next to it (the pair saw nearly the same machine load), then the median of those
# paired ratios; and best over best.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v b="$1" -v s="$2" -v c="$3" '$1 == b && $2 == s {print $c}' "$OUT_DIR/runs.tsv"; }
# paired BENCH NAME ANCHOR COL: per-repetition NAME/ANCHOR ratios of column COL.
paired() {
  awk -F'\t' -v b="$1" -v s="$2" -v a="$3" -v c="$4" '$1 == b && $2 == s { x[$3] = $c }
    $1 == b && $2 == a { y[$3] = $c } END { for (r in x) if (r in y) print x[r] / y[r] }' \
    "$OUT_DIR/runs.tsv"
}
echo
echo "| benchmark | server | req/s median | req/s best | p50 µs | p99 µs | req/s ratio, paired median | req/s ratio, best/best | p99 ratio, paired median | load1 during runs |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for bench in $BENCHES; do
  if [[ $bench == grpc ]]; then anchor=grpcpp; else anchor=beast; fi
  a_best=$(col "$bench" "$anchor" 4 | sort -g | tail -1)
  for name in ours ours-inline "$anchor"; do
    rps=$(col "$bench" "$name" 4 | median)
    best=$(col "$bench" "$name" 4 | sort -g | tail -1)
    p50=$(col "$bench" "$name" 5 | median)
    p99=$(col "$bench" "$name" 6 | median)
    r_rps=$(paired "$bench" "$name" "$anchor" 4 | median)
    r_p99=$(paired "$bench" "$name" "$anchor" 6 | median)
    loads=$(col "$bench" "$name" 8 | sort -g | paste -sd/ -)
    awk -v b="$bench" -v n="$name" -v r="$rps" -v be="$best" -v p5="$p50" -v p9="$p99" \
      -v rr="$r_rps" -v ab="$a_best" -v rp="$r_p99" -v l="$loads" 'BEGIN {
        printf "| %s | %s | %.0f | %.0f | %.0f | %.0f | %.2fx | %.2fx | %.2fx | %s |\n",
          b, n, r, be, p5, p9, rr, be / ab, rp, l }'
  done
done

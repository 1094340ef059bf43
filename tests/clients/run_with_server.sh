#!/usr/bin/env bash
# Starts an echo server, waits for its "listening <addr>" line, runs a test command against it
# with ECHO_ADDR=<addr> in the environment, then stops the server (SIGTERM, SIGKILL after 10 s).
# The test's exit status is the script's; a server that dies during the test fails it too.
#
#   run_with_server.sh SERVER [SERVER ARGS...] -- TEST COMMAND [ARGS...]
#
# The server must bind loopback port 0 by default (rpc_echo_server and reference_echo_server.mjs
# both do) and print "listening HOST:PORT" on stdout; the first such line is used.
set -euo pipefail

server=()
while (($#)) && [ "$1" != "--" ]; do
  server+=("$1")
  shift
done
if ((${#server[@]} == 0)) || [ "${1:-}" != "--" ] || (($# < 2)); then
  echo "usage: $0 SERVER [ARGS...] -- TEST [ARGS...]" >&2
  exit 2
fi
shift

work=$(mktemp -d)
server_pid=
# shellcheck disable=SC2317  # Called through the EXIT trap.
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$server_pid" 2>/dev/null; then
      echo "run_with_server: server ignored SIGTERM for 10 s, killing it" >&2
      kill -KILL "$server_pid" 2>/dev/null || true
    fi
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"${server[@]}" >"$work/stdout" 2>"$work/stderr" &
server_pid=$!

addr=
for _ in $(seq 300); do
  addr=$(sed -n 's/^listening \(.*\)$/\1/p' "$work/stdout" | head -n1)
  [ -n "$addr" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "run_with_server: server exited before listening:" >&2
    cat "$work/stdout" "$work/stderr" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "run_with_server: no 'listening <addr>' line from ${server[*]} within 30 s:" >&2
  cat "$work/stdout" "$work/stderr" >&2
  exit 1
fi
echo "run_with_server: ${server[0]##*/} listening on $addr"

rc=0
ECHO_ADDR=$addr "$@" || rc=$?

if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "run_with_server: the server died during the test; its stderr:" >&2
  cat "$work/stderr" >&2
  rc=1
elif [ -s "$work/stderr" ]; then
  echo "run_with_server: server stderr:"
  cat "$work/stderr"
fi
exit "$rc"

#!/usr/bin/env bash
# Sets everything up and shows what metald does today. Safe to run twice; run as root.
#
# Today (RPC layer landed, daemon pending — see docs/status.md): builds the project, builds the
# demo guest image, starts the RPC layer's demo server (EchoService + grpc.health.v1.Health on
# 127.0.0.1:8080, Connect + gRPC + gRPC-Web on one port) and calls it with clients nobody here
# wrote. When the metald daemon lands this script starts it and boots a demo VM instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/bootstrap.sh
build=${METALD_BUILD_DIR:-$root/build/demo}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMETALD_TESTS=OFF -DMETALD_BENCH=OFF >/dev/null
ninja -C "$build" -j"$(nproc)" rpc_echo_server metald_test_echo_proto
bash tools/build-guest-image.sh "$build/guest"

addr=${METALD_DEMO_LISTEN:-127.0.0.1:8080}
pidfile="$build/demo-server.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  kill "$(cat "$pidfile")"; sleep 0.5
fi
log="$build/demo-server.log"
"$build/tests/rpc/rpc_echo_server" --listen "$addr" >"$log" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 50); do grep -q '^listening' "$log" && break; sleep 0.1; done
grep -q '^listening' "$log" || { cat "$log"; echo "demo: server did not start"; exit 1; }

buf="$root/tests/clients/node_modules/.bin/buf"
schema="$build/gen/metald_test_echo_proto.binpb"
echo
echo "== Connect JSON over HTTP/1.1 (curl)"
curl -sS -H 'content-type: application/json' -d '{"message":"hello","number":"42"}' "http://$addr/metald.test.v1.EchoService/Echo"
echo
echo "== gRPC over h2c (buf curl)"
"$buf" curl --protocol grpc --http2-prior-knowledge --schema "$schema" \
  -d '{"message":"hello over grpc"}' "http://$addr/metald.test.v1.EchoService/Echo"
echo "== server streaming (buf curl, Connect)"
"$buf" curl --schema "$schema" -d '{"count":3}' "http://$addr/metald.test.v1.EchoService/Count"
cat <<EOT

The demo server runs in the background (pid $(cat "$pidfile"), log $log). Try:
  curl -s -H 'content-type: application/json' -d '{"fail_code":"not_found","message":"nope"}' http://$addr/metald.test.v1.EchoService/Echo
  $buf curl --protocol grpcweb --schema $schema -d '{"count":5,"interval_ms":200}' http://$addr/metald.test.v1.EchoService/Count
  $buf curl --protocol grpc --http2-prior-knowledge --schema $build/gen/metald_proto_health.binpb http://$addr/grpc.health.v1.Health/Check
The demo guest image is in $build/guest (see docs/guest-image.md). Stop the server: kill \$(cat $pidfile)
EOT

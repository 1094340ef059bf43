#!/usr/bin/env bash
# Calls metald's echo test service with two clients nobody here wrote, and asserts exact
# answers:
#   * `buf curl` (connect-go inside): --protocol connect, grpc and grpcweb, over HTTP/1.1 and
#     h2c (--http2-prior-knowledge) where the protocol allows it. buf formats the answers
#     itself, so its output is compared byte for byte.
#   * `curl` with hand-written Connect requests: unary POST with JSON, GET, and bad input
#     (404, 405, 415, 400, 429) that a typed client cannot send. The server's JSON is compared
#     after parsing (key order and proto3 default values are the server's choice).
#
# Environment:
#   ECHO_ADDR         host:port of a running echo server, required (run_with_server.sh sets it).
#   ECHO_DESCRIPTORS  path of metald_test_echo_proto.binpb, required.
#   ECHO_REFERENCE=1  the server is reference_echo_server.mjs (connect-node): skips the checks
#                     of headers that connect-node does not send (Allow, Accept-Post).
# Exit status 0 only when every check passed; the last line is "N passed, M failed".
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
addr=${ECHO_ADDR:?ECHO_ADDR must be set (host:port of the echo server)}
schema=${ECHO_DESCRIPTORS:?ECHO_DESCRIPTORS must be set (path of the .binpb descriptor set)}
# The platform binary, not node_modules/.bin/buf: that is a node wrapper that costs ~0.5 s a call.
buf=$here/node_modules/@bufbuild/buf-linux-x64/bin/buf
[ -x "$buf" ] || buf=$here/node_modules/.bin/buf
if [ ! -x "$buf" ]; then
  echo "FATAL: $buf missing: run tools/bootstrap.sh (npm install in tests/clients)" >&2
  exit 2
fi
[ -f "$schema" ] || { echo "FATAL: descriptor set $schema missing" >&2; exit 2; }
command -v curl >/dev/null || { echo "FATAL: curl not installed" >&2; exit 2; }
command -v node >/dev/null || { echo "FATAL: node not installed" >&2; exit 2; }
command -v nghttp >/dev/null || { echo "FATAL: nghttp not installed (nghttp2-client)" >&2; exit 2; }

base=http://$addr
svc=$base/metald.test.v1.EchoService
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
skipped=0
# shellcheck source=tests/lib/results.sh
source "$here/../lib/results.sh"

# expect_eq NAME ACTUAL EXPECTED: exact string comparison, with a diff on failure.
expect_eq() {
  if [ "$2" == "$3" ]; then
    pass "$1"
  else
    fail "$1" "expected:" "$(printf '%s' "$3" | sed 's/^/  /')" "actual:" \
      "$(printf '%s' "$2" | sed 's/^/  /')"
  fi
}

# expect_line NAME FILE LINE: FILE has a line equal to LINE (after removing CR).
expect_line() {
  if grep -qxF -- "$3" < <(tr -d '\r' <"$2"); then
    pass "$1"
  else
    fail "$1" "no line '$3' in:" "$(tr -d '\r' <"$2" | sed 's/^/  /')"
  fi
}

# expect_no_line NAME FILE REGEX: no line of FILE matches the extended REGEX (case-insensitive).
expect_no_line() {
  if grep -qiE -- "$3" < <(tr -d '\r' <"$2"); then
    fail "$1" "unexpected line matching '$3' in:" "$(tr -d '\r' <"$2" | sed 's/^/  /')"
  else
    pass "$1"
  fi
}

# ---------------------------------------------------------------------------------------------
# buf curl

# bufcall PROTOCOL HTTP2(0|1) METHOD DATA [extra buf flags...]: runs buf curl -v; leaves
# stdout in $work/out, stderr (verbose trace and errors) in $work/err, exit code in $rc.
# No --timeout by default: buf would send it and the server would echo it in timeoutMs; the
# outer `timeout` only guards against a hung server.
bufcall() {
  local protocol=$1 h2=$2 method=$3 data=$4
  shift 4
  local flags=(curl --schema "$schema" --protocol "$protocol" -v)
  [ "$h2" = 1 ] && flags+=(--http2-prior-knowledge)
  rc=0
  timeout 60 "$buf" "${flags[@]}" "$@" -d "$data" "$svc/$method" >"$work/out" 2>"$work/err" ||
    rc=$?
}

# The error part of buf's stderr (its verbose trace lines start with "buf: ").
buf_error() { grep -v '^buf: ' "$work/err" || true; }

echo_json() {  # protocol: the exact output buf prints for the round-trip request below
  cat <<EOF
{
  "message": "hi there",
  "number": "-9007199254740993",
  "payload": "AAEC/w==",
  "headers": {
    "x-test-foo": "bar"
  },
  "protocol": "$1",
  "codec": "proto"
}
EOF
}

count_json() {  # n: buf's output for Count{count: n}
  local i
  for ((i = 1; i <= $1; i++)); do printf '{\n  "n": %d\n}\n' "$i"; done
}

for variant in "connect 0" "connect 1" "grpc 1" "grpcweb 0" "grpcweb 1"; do
  read -r protocol h2 <<<"$variant"
  name="buf $protocol $([ "$h2" = 1 ] && echo h2c || echo http/1.1)"
  wire_protocol=$([ "$protocol" = grpcweb ] && echo grpc-web || echo "$protocol")

  bufcall "$protocol" "$h2" Echo \
    '{"message":"hi there","number":"-9007199254740993","payload":"AAEC/w=="}' -H 'x-test-foo: bar'
  expect_eq "$name: Echo exit code" "$rc" 0
  expect_eq "$name: Echo answer" "$(cat "$work/out")" "$(echo_json "$wire_protocol")"
  expect_line "$name: Echo response header" "$work/err" 'buf: < (#1) X-Echo-Header: hi there'
  case $protocol in
    # Connect unary trailers travel as Trailer- prefixed headers; gRPC's as HTTP trailers,
    # which buf prints after the body. buf -v does not show gRPC-Web's in-body trailers
    # (the connect-node test checks those).
    connect) expect_line "$name: Echo trailer" "$work/err" 'buf: < (#1) Trailer-X-Echo-Trailer: -9007199254740993' ;;
    grpc)
      expect_line "$name: Echo grpc-status trailer" "$work/err" 'buf: < (#1) Grpc-Status: 0'
      expect_line "$name: Echo trailer" "$work/err" 'buf: < (#1) X-Echo-Trailer: -9007199254740993'
      ;;
  esac
  if [ "$protocol" = connect ]; then
    expect_line "$name: HTTP version" "$work/err" \
      "buf: < (#1) HTTP/$([ "$h2" = 1 ] && echo 2.0 || echo 1.1) 200 OK"
  fi

  # The timeout buf sends (from --timeout 30s) must reach the handler.
  bufcall "$protocol" "$h2" Echo '{"message":"t"}' --timeout 30s
  if [ "$rc" = 0 ] && grep -qE '^  "timeoutMs": "([1-9][0-9]{0,3}|[12][0-9]{4}|30000)"' "$work/out"; then
    pass "$name: timeout reaches the handler"
  else
    fail "$name: timeout reaches the handler" "rc=$rc, want timeoutMs in (0, 30000]:" \
      "$(cat "$work/out" "$work/err")"
  fi

  bufcall "$protocol" "$h2" Echo '{"message":"nope","fail_code":"not_found"}'
  expect_eq "$name: error exit code (NOT_FOUND << 3)" "$rc" 40
  expect_eq "$name: error" "$(buf_error)" $'{\n   "code": "not_found",\n   "message": "nope"\n}'

  bufcall "$protocol" "$h2" Echo '{"message":"perm","fail_code":"permission_denied"}'
  expect_eq "$name: error code permission_denied" "$rc" 56
  expect_eq "$name: error permission_denied" "$(buf_error)" \
    $'{\n   "code": "permission_denied",\n   "message": "perm"\n}'

  # buf's --timeout is both the deadline it sends and its own command timeout, so whether the
  # server's deadline_exceeded or buf's own "Failure: context deadline exceeded" (exit 1) comes
  # first is a race; both are right. The server side is checked exactly with curl below.
  bufcall "$protocol" "$h2" Echo '{"message":"slow","sleep_ms":2000}' --timeout 200ms
  if { [ "$rc" = 32 ] && grep -qxF '   "code": "deadline_exceeded",' < <(buf_error); } ||
     { [ "$rc" = 1 ] && grep -qE '^Failure: .*context deadline exceeded$' < <(buf_error); }; then
    pass "$name: deadline exceeded"
  else
    fail "$name: deadline exceeded" "rc=$rc" "$(buf_error)"
  fi

  bufcall "$protocol" "$h2" Count '{"count":5}'
  expect_eq "$name: Count exit code" "$rc" 0
  expect_eq "$name: Count 5" "$(cat "$work/out")" "$(count_json 5)"

  bufcall "$protocol" "$h2" Count '{"count":3,"fail_code":"aborted"}'
  expect_eq "$name: Count error exit code (ABORTED << 3)" "$rc" 80
  expect_eq "$name: Count messages before error" "$(cat "$work/out")" "$(count_json 3)"
  expect_eq "$name: Count error code" "$(buf_error | grep '"code"')" '   "code": "aborted",'

  bufcall "$protocol" "$h2" EchoGet '{"message":"g","number":"12"}'
  expect_eq "$name: EchoGet" "$(cat "$work/out")" \
    "$(printf '{\n  "message": "g",\n  "number": "12",\n  "protocol": "%s",\n  "codec": "proto"\n}' \
      "$wire_protocol")"

  bufcall "$protocol" "$h2" Nope '{}'
  if [ "$rc" = 1 ] && grep -q 'Nope' "$work/err"; then
    pass "$name: unknown method refused by buf's schema"
  else
    fail "$name: unknown method refused by buf's schema" "rc=$rc" "$(cat "$work/err")"
  fi
done

# ---------------------------------------------------------------------------------------------
# curl: Connect by hand

# curlcall NAME [curl args...]: body in $work/body, headers in $work/headers, status in $status.
curlcall() {
  rm -f "$work/body" "$work/headers"
  touch "$work/body" "$work/headers"
  status=$(curl -sS --max-time 30 -o "$work/body" -D "$work/headers" -w '%{http_code}' "$@") ||
    status="curl-exit-$?"
}

# json_eq NAME FILE EXPECTED_JSON: FILE parses as JSON equal to EXPECTED_JSON, ignoring key order
# and keys whose value is a proto3 default ("", "0", 0, false, {}, []), which a server may emit.
json_eq() {
  local out
  if out=$(node -e '
    const fs = require("fs");
    const strip = (v) => {
      if (Array.isArray(v)) return v.map(strip);
      if (v === null || typeof v !== "object") return v;
      const o = {};
      for (const k of Object.keys(v).sort()) {
        const x = strip(v[k]);
        const isDefault = x === "" || x === "0" || x === 0 || x === false ||
          (Array.isArray(x) && x.length === 0) ||
          (x !== null && typeof x === "object" && Object.keys(x).length === 0);
        if (!isDefault) o[k] = x;
      }
      return o;
    };
    let actual;
    try { actual = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); }
    catch (e) { console.log("not JSON: " + fs.readFileSync(process.argv[1], "utf8")); process.exit(1); }
    const a = JSON.stringify(strip(actual)), e = JSON.stringify(strip(JSON.parse(process.argv[2])));
    if (a !== e) { console.log("expected " + e + "\nactual   " + a); process.exit(1); }
  ' "$2" "$3" 2>&1); then
    pass "$1"
  else
    fail "$1" "$out"
  fi
}

# header VALUE of NAME in $work/headers (case-insensitive name, CR removed, first match).
header() {
  tr -d '\r' <"$work/headers" | awk -v n="$(echo "$1" | tr '[:upper:]' '[:lower:]')" '
    { i = index($0, ":"); if (i && tolower(substr($0, 1, i - 1)) == n) {
        v = substr($0, i + 1); sub(/^[ \t]+/, "", v); print v; exit } }'
}

hello='{"message":"hi","number":"42","payload":"AQID"}'
hello_reply='{"message":"hi","number":"42","payload":"AQID","headers":{"x-test-foo":"bar"},
              "protocol":"connect","codec":"json"}'
for h in "--http1.1" "--http2-prior-knowledge"; do
  name="curl $([ "$h" = --http1.1 ] && echo http/1.1 || echo h2c)"

  curlcall "$h" -H 'Content-Type: application/json' -H 'Connect-Protocol-Version: 1' \
    -H 'x-test-foo: bar' --data "$hello" "$svc/Echo"
  expect_eq "$name: POST JSON status" "$status" 200
  expect_eq "$name: POST JSON content-type" "$(header content-type)" application/json
  expect_eq "$name: POST JSON x-echo-header" "$(header x-echo-header)" hi
  expect_eq "$name: POST JSON trailer-x-echo-trailer" "$(header trailer-x-echo-trailer)" 42
  json_eq "$name: POST JSON body" "$work/body" "$hello_reply"
  expect_no_line "$name: no x-echo-trailer as a plain header" "$work/headers" '^x-echo-trailer:'

  # application/json; charset=utf-8 is accepted too (connect-go does).
  curlcall "$h" -H 'Content-Type: application/json; charset=utf-8' --data '{"message":"cs"}' \
    "$svc/Echo"
  expect_eq "$name: charset=utf-8 status" "$status" 200
  json_eq "$name: charset=utf-8 body" "$work/body" \
    '{"message":"cs","protocol":"connect","codec":"json"}'

  # GET: query parameters in any order, unknown ones ignored; message is percent-encoded JSON.
  curlcall "$h" -H 'x-test-foo: bar' \
    "$svc/EchoGet?encoding=json&message=%7B%22message%22%3A%22hi%22%2C%22number%22%3A%2242%22%2C%22payload%22%3A%22AQID%22%7D&connect=v1&unknown=1"
  expect_eq "$name: GET status" "$status" 200
  expect_eq "$name: GET x-echo-header" "$(header x-echo-header)" hi
  json_eq "$name: GET body" "$work/body" "$hello_reply"

  # GET with base64url proto: EchoRequest{message: "b64"} = 0a 03 62 36 34.
  curlcall "$h" "$svc/EchoGet?connect=v1&encoding=proto&base64=1&message=CgNiNjQ"
  expect_eq "$name: GET proto status" "$status" 200
  expect_eq "$name: GET proto content-type" "$(header content-type)" application/proto
  expect_eq "$name: GET proto body" "$(od -An -tx1 -N5 "$work/body" | tr -s ' ')" " 0a 03 62 36 34"

  curlcall "$h" -H 'Content-Type: application/json' \
    --data '{"message":"gone","number":"5","fail_code":"not_found"}' "$svc/Echo"
  expect_eq "$name: error status" "$status" 404
  expect_eq "$name: error content-type" "$(header content-type)" application/json
  json_eq "$name: error body" "$work/body" '{"code":"not_found","message":"gone"}'

  # A proto request's error is still JSON.
  printf '\x0a\x01e\x22\x13failed_precondition' >"$work/req.bin"
  curlcall "$h" -H 'Content-Type: application/proto' --data-binary @"$work/req.bin" "$svc/Echo"
  expect_eq "$name: proto request error status" "$status" 400
  expect_eq "$name: proto request error content-type" "$(header content-type)" application/json
  json_eq "$name: proto request error body" "$work/body" '{"code":"failed_precondition","message":"e"}'

  curlcall "$h" -H 'Content-Type: application/json' -H 'Connect-Timeout-Ms: 200' \
    --data '{"sleep_ms":2000}' "$svc/Echo"
  expect_eq "$name: Connect-Timeout-Ms 200 status" "$status" 504
  json_eq "$name: Connect-Timeout-Ms 200 code" <(node -e '
    const b = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(JSON.stringify({code: b.code}))' "$work/body" 2>&1) '{"code":"deadline_exceeded"}'

  curlcall "$h" -H 'Content-Type: application/json' --data '{}' "$svc/Nope"
  expect_eq "$name: unknown method -> 404" "$status" 404
  curlcall "$h" -H 'Content-Type: application/json' --data '{}' "$base/nope.v1.Nope/Echo"
  expect_eq "$name: unknown service -> 404" "$status" 404

  curlcall "$h" -X PUT -H 'Content-Type: application/json' --data '{}' "$svc/Echo"
  expect_eq "$name: PUT -> 405" "$status" 405
  if [ "${ECHO_REFERENCE:-0}" = 1 ]; then
    skipped=$((skipped + 1))
  elif grep -qw POST < <(header allow); then
    pass "$name: 405 has Allow: POST"
  else
    fail "$name: 405 has Allow: POST" "$(cat "$work/headers")"
  fi
  curlcall "$h" "$svc/Echo?connect=v1&encoding=json&message=%7B%7D"
  expect_eq "$name: GET on a method with side effects -> 405" "$status" 405

  curlcall "$h" -H 'Content-Type: text/plain' --data '{}' "$svc/Echo"
  expect_eq "$name: text/plain -> 415" "$status" 415
  if [ "${ECHO_REFERENCE:-0}" = 1 ]; then
    skipped=$((skipped + 1))
  elif grep -q 'application/json' < <(header accept-post); then
    pass "$name: 415 has Accept-Post"
  else
    fail "$name: 415 has Accept-Post" "$(cat "$work/headers")"
  fi
  curlcall "$h" -H 'Content-Type: application/connect+json' --data '{}' "$svc/Echo"
  expect_eq "$name: streaming content-type on unary -> 415" "$status" 415

  curlcall "$h" -H 'Content-Type: application/json' --data '{"message":' "$svc/Echo"
  expect_eq "$name: malformed JSON -> 400" "$status" 400
  json_eq "$name: malformed JSON code" <(node -e '
    const b = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(JSON.stringify({code: b.code}))' "$work/body" 2>&1) '{"code":"invalid_argument"}'

  for bad in abc -5 12345678901; do
    curlcall "$h" -H 'Content-Type: application/json' -H "Connect-Timeout-Ms: $bad" --data '{}' \
      "$svc/Echo"
    expect_eq "$name: Connect-Timeout-Ms $bad -> 400" "$status" 400
    json_eq "$name: Connect-Timeout-Ms $bad code" <(node -e '
      const b = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      console.log(JSON.stringify({code: b.code}))' "$work/body" 2>&1) '{"code":"invalid_argument"}'
  done

  curlcall "$h" -H 'Content-Type: application/json' -H 'Connect-Protocol-Version: 2' --data '{}' \
    "$svc/Echo"
  expect_eq "$name: Connect-Protocol-Version 2 -> 400" "$status" 400
  json_eq "$name: Connect-Protocol-Version 2 code" <(node -e '
    const b = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(JSON.stringify({code: b.code}))' "$work/body" 2>&1) '{"code":"invalid_argument"}'

  curlcall "$h" -H 'Content-Type: application/json' -H 'Content-Encoding: foo' --data '{}' \
    "$svc/Echo"
  expect_eq "$name: Content-Encoding foo -> 501" "$status" 501
  json_eq "$name: Content-Encoding foo code" <(node -e '
    const b = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(JSON.stringify({code: b.code}))' "$work/body" 2>&1) '{"code":"unimplemented"}'

  # gzip request body (Content-Encoding) is decoded.
  printf '{"message":"zipped"}' | gzip -c >"$work/req.gz"
  curlcall "$h" -H 'Content-Type: application/json' -H 'Content-Encoding: gzip' \
    --data-binary @"$work/req.gz" "$svc/Echo"
  expect_eq "$name: gzip request status" "$status" 200
  json_eq "$name: gzip request body" "$work/body" \
    '{"message":"zipped","protocol":"connect","codec":"json"}'

  curlcall "$h" "$svc/EchoGet?connect=v1&encoding=xml&message=%7B%7D"
  expect_eq "$name: GET encoding=xml -> 415" "$status" 415

  # Unicode and control characters in an error message survive JSON escaping.
  curlcall "$h" -H 'Content-Type: application/json' \
    --data '{"message":"\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \ud83d\ude08\n","fail_code":"internal"}' \
    "$svc/Echo"
  expect_eq "$name: unicode error status" "$status" 500
  json_eq "$name: unicode error body" "$work/body" \
    '{"code":"internal","message":"\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \ud83d\ude08\n"}'

  # gRPC-Web by hand: the trailers are the last frame (flag 0x80), an HTTP/1-style block with
  # lower-case names and CRLF line ends, and no blank line. EchoRequest{message: "abc"}.
  printf '\x00\x00\x00\x00\x05\x0a\x03abc' >"$work/gw.bin"
  curlcall "$h" -H 'Content-Type: application/grpc-web+proto' -H 'x-grpc-web: 1' \
    --data-binary @"$work/gw.bin" "$svc/Echo"
  expect_eq "$name: grpc-web status" "$status" 200
  expect_eq "$name: grpc-web content-type" "$(header content-type)" application/grpc-web+proto
  expect_eq "$name: grpc-web trailer frame" "$(node -e '
    const b = require("fs").readFileSync(process.argv[1]);
    let off = 0, last = null;
    while (off + 5 <= b.length) {
      const len = b.readUInt32BE(off + 1);
      last = { flags: b[off], body: b.subarray(off + 5, off + 5 + len) };
      off += 5 + len;
    }
    if (off !== b.length || !last) { console.log("bad framing, " + b.length + " bytes"); process.exit(); }
    console.log("flags=0x" + last.flags.toString(16) + " " + JSON.stringify(last.body.toString("latin1")));
  ' "$work/body")" 'flags=0x80 "grpc-status: 0\r\nx-echo-trailer: 0\r\n"'

  # 5 MiB is over the receive limit (4 MiB).
  [ -f "$work/big.json" ] || { printf '{"message":"'; head -c $((5 << 20)) /dev/zero | tr '\0' x
                               printf '"}'; } >"$work/big.json"
  if [ "$h" = --http1.1 ]; then
    curlcall "$h" -H 'Content-Type: application/json' --data-binary @"$work/big.json" "$svc/Echo"
    expect_eq "$name: 5 MiB body -> 429" "$status" 429
    json_eq "$name: 5 MiB body code" <(node -e '
      const b = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      console.log(JSON.stringify({code: b.code}))' "$work/body" 2>&1) '{"code":"resource_exhausted"}'
  else
    # Over HTTP/2 the server answers before the upload ends and then resets the stream with
    # NO_ERROR (RFC 9113 section 8.1), which Debian's curl 7.88 reports as error 92 even when the
    # response was complete. nghttp shows the frames: the whole response (HEADERS, then DATA
    # with END_STREAM) must come before the RST_STREAM.
    timeout 60 nghttp -v -H 'content-type: application/json' -d "$work/big.json" "$svc/Echo" \
      >"$work/nghttp" 2>&1 || true
    frames=$(awk -f "$here/nghttp_frames.awk" "$work/nghttp")
    if [[ "$frames" =~ ^status=429\ END_STREAM(\ RST_STREAM\(NO_ERROR\))?\ $ ]]; then
      pass "$name: 5 MiB body -> 429, complete response, then at most RST_STREAM(NO_ERROR)"
    else
      fail "$name: 5 MiB body -> 429, complete response, then at most RST_STREAM(NO_ERROR)" \
        "frames received: $frames"
    fi
    if grep -qF '"code":"resource_exhausted"' "$work/nghttp"; then
      pass "$name: 5 MiB body code"
    else
      fail "$name: 5 MiB body code" "no resource_exhausted error body; nghttp -v said:" \
        "$(grep -E 'recv|send (HEADERS|RST|GOAWAY)|code' "$work/nghttp" | head -40)"
    fi
  fi

  # The server still answers on a fresh request after all that.
  curlcall "$h" -H 'Content-Type: application/json' --data '{"message":"still here"}' "$svc/Echo"
  expect_eq "$name: still serving" "$status" 200
done

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]

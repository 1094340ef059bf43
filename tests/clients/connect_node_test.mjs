// Calls metald's echo test service with connect-node (@connectrpc/connect-node), a client
// nobody here wrote, over every transport it has: Connect (HTTP/1.1 and h2c, binary and JSON),
// gRPC (h2c) and gRPC-Web (HTTP/1.1 and h2c). The schema comes from the descriptor set the
// build writes, so no generated JavaScript is involved.
//
// Environment:
//   ECHO_ADDR         host:port of a running echo server (rpc_echo_server), required.
//   ECHO_DESCRIPTORS  path of metald_test_echo_proto.binpb, required.
// Run: node --test connect_node_test.mjs (run_with_server.sh starts the server and sets both).
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  Http2SessionManager,
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { loadEchoService } from "./echo_schema.mjs";

const addr = process.env.ECHO_ADDR;
const descriptors = process.env.ECHO_DESCRIPTORS;
if (!addr || !descriptors) {
  throw new Error("ECHO_ADDR and ECHO_DESCRIPTORS must be set (see run_with_server.sh)");
}
const baseUrl = `http://${addr}`;
const { service } = loadEchoService(descriptors);

// HTTP/2 sessions are owned here so that they can be closed when the tests end; otherwise an
// idle h2 session would keep the process (and ctest) waiting.
const sessions = [];
function h2Session() {
  const m = new Http2SessionManager(baseUrl);
  sessions.push(m);
  return m;
}
after(() => sessions.forEach((m) => m.abort()));

// Every transport variant, with what the server must report back for it. make(extra) builds
// the transport, with `extra` options (compression, ...) merged in.
const h1 = { baseUrl, httpVersion: "1.1" };
const h2 = () => ({ baseUrl, httpVersion: "2", sessionManager: h2Session() });
const variants = [
  { name: "connect http/1.1 proto", protocol: "connect", codec: "proto", connect: true,
    make: (x) => createConnectTransport({ ...h1, useBinaryFormat: true, ...x }) },
  { name: "connect http/1.1 json", protocol: "connect", codec: "json", connect: true,
    make: (x) => createConnectTransport({ ...h1, useBinaryFormat: false, ...x }) },
  { name: "connect h2c proto", protocol: "connect", codec: "proto", connect: true,
    make: (x) => createConnectTransport({ ...h2(), useBinaryFormat: true, ...x }) },
  { name: "connect h2c json", protocol: "connect", codec: "json", connect: true,
    make: (x) => createConnectTransport({ ...h2(), useBinaryFormat: false, ...x }) },
  { name: "grpc h2c proto", protocol: "grpc", codec: "proto",
    make: (x) => createGrpcTransport({ ...h2(), useBinaryFormat: true, ...x }) },
  { name: "grpc h2c json", protocol: "grpc", codec: "json",
    make: (x) => createGrpcTransport({ ...h2(), useBinaryFormat: false, ...x }) },
  { name: "grpc-web http/1.1 proto", protocol: "grpc-web", codec: "proto",
    make: (x) => createGrpcWebTransport({ ...h1, useBinaryFormat: true, ...x }) },
  { name: "grpc-web http/1.1 json", protocol: "grpc-web", codec: "json",
    make: (x) => createGrpcWebTransport({ ...h1, useBinaryFormat: false, ...x }) },
  { name: "grpc-web h2c proto", protocol: "grpc-web", codec: "proto",
    make: (x) => createGrpcWebTransport({ ...h2(), useBinaryFormat: true, ...x }) },
];

// Byte-wise equality that ignores whether the client handed back a Buffer or a Uint8Array.
function assertBytes(actual, expected, what) {
  assert.ok(actual instanceof Uint8Array, `${what}: not bytes`);
  assert.equal(actual.length, expected.length, `${what}: length`);
  assert.ok(Buffer.from(actual.buffer, actual.byteOffset, actual.length)
    .equals(Buffer.from(expected.buffer, expected.byteOffset, expected.length)),
  `${what}: contents differ`);
}

// Resolves to the ConnectError the promise rejects with; fails the test if it resolves.
async function rejection(promise) {
  try {
    const value = await promise;
    assert.fail(`expected an error, got a response: ${JSON.stringify(value, (_, v) =>
      typeof v === "bigint" ? v.toString() : v)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    return ConnectError.from(e);
  }
}

for (const v of variants) {
  describe(v.name, () => {
    const client = createClient(service, v.make({}));

    it("echoes every field, int64 and bytes intact", async () => {
      // 2^53 + 1 is not representable as a JS number: it must travel as a 64-bit integer.
      const number = -(2n ** 53n) - 1n;
      const payload = new Uint8Array([0, 1, 2, 0x7f, 0x80, 0xfe, 0xff]);
      // The message becomes the x-echo-header value, which must be printable ASCII.
      const message = "hello \"world\" {json} 100% <ok> \\ ~";
      const res = await client.echo({ message, number, payload });
      assert.equal(res.message, message);
      assert.equal(res.number, number);
      assertBytes(res.payload, payload, "payload");
      assert.equal(res.protocol, v.protocol);
      assert.equal(res.codec, v.codec);
      assert.deepEqual(res.headers, {});
      assert.equal(res.timeoutMs, 0n, "no timeout was sent, the server must see none");
    });

    it("sends an empty request and gets an empty echo", async () => {
      const res = await client.echo({});
      assert.equal(res.message, "");
      assert.equal(res.number, 0n);
      assert.equal(res.payload.length, 0);
      assert.equal(res.protocol, v.protocol);
    });

    it("carries messages larger than the HTTP/2 flow-control window", async () => {
      const payload = new Uint8Array(300 * 1024);
      for (let i = 0; i < payload.length; i++) payload[i] = (i * 31 + 7) & 0xff;
      const res = await client.echo({ message: "big", payload });
      assertBytes(res.payload, payload, "echoed payload");
      const big = await client.echo({ message: "big reply", responseBytes: 1 << 20 });
      assertBytes(big.payload, Buffer.alloc(1 << 20, 0x78), "response_bytes payload");
    });

    it("sends gzip-compressed requests and reads compressed responses", async () => {
      // compressMinBytes 0: every message is compressed, the empty one included.
      const gz = createClient(service, v.make({ sendCompression: compressionGzip,
                                                acceptCompression: [compressionGzip],
                                                compressMinBytes: 0 }));
      const payload = new Uint8Array(20000).fill(0x61);
      const res = await gz.echo({ message: "gz", payload, responseBytes: 0 });
      assert.equal(res.message, "gz");
      assertBytes(res.payload, payload, "payload");
      const big = await gz.echo({ message: "gz big", responseBytes: 100000 });
      assertBytes(big.payload, Buffer.alloc(100000, 0x78), "response_bytes payload");
      const empty = await gz.echo({});
      assert.equal(empty.protocol, v.protocol);
      const got = [];
      for await (const m of gz.count({ count: 3 })) got.push(m.n);
      assert.deepEqual(got, [1, 2, 3]);
      const err = await rejection(gz.echo({ message: "gz err", failCode: "out_of_range" }));
      assert.equal(err.code, Code.OutOfRange, `got ${Code[err.code]}: ${err.message}`);
      assert.equal(err.rawMessage, "gz err");
    });

    it("passes request headers, response header and trailer", async () => {
      let header;
      let trailer;
      const res = await client.echo({ message: "meta", number: 7n }, {
        headers: { "x-test-foo": "bar", "x-test-Other": "two words", "x-not-echoed": "no" },
        onHeader: (h) => { header = h; },
        onTrailer: (t) => { trailer = t; },
      });
      assert.deepEqual(res.headers, { "x-test-foo": "bar", "x-test-other": "two words" });
      assert.ok(header, "onHeader was not called");
      assert.ok(trailer, "onTrailer was not called");
      assert.equal(header.get("x-echo-header"), "meta");
      assert.equal(trailer.get("x-echo-trailer"), "7");
      // Trailers must not leak into headers, nor headers into trailers.
      assert.equal(header.get("x-echo-trailer"), null);
      assert.equal(trailer.get("x-echo-header"), null);
    });

    it("maps fail_code not_found to Code.NotFound with the message", async () => {
      const err = await rejection(client.echo({ message: "no such thing", failCode: "not_found" }));
      assert.equal(err.code, Code.NotFound, `got ${Code[err.code]}: ${err.message}`);
      assert.equal(err.rawMessage, "no such thing");
    });

    it("keeps whitespace and Unicode in error messages", async () => {
      // The conformance suite's unary/unicode-error-message case: JSON escaping for Connect,
      // percent-encoding of grpc-message for gRPC and gRPC-Web.
      const message = "\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈 100%\n";
      const err = await rejection(client.echo({ message, failCode: "internal" }));
      assert.equal(err.code, Code.Internal, `got ${Code[err.code]}: ${err.message}`);
      assert.equal(err.rawMessage, message);
    });

    it("maps other codes too", async () => {
      for (const [name, code] of [["invalid_argument", Code.InvalidArgument],
                                  ["permission_denied", Code.PermissionDenied],
                                  ["unavailable", Code.Unavailable],
                                  ["internal", Code.Internal],
                                  ["canceled", Code.Canceled]]) {
        const err = await rejection(client.echo({ message: `m-${name}`, failCode: name }));
        assert.equal(err.code, code, `${name}: got ${Code[err.code]}: ${err.message}`);
        assert.equal(err.rawMessage, `m-${name}`);
      }
    });

    it("propagates the timeout to the handler", async () => {
      const res = await client.echo({ message: "t" }, { timeoutMs: 60000 });
      assert.ok(res.timeoutMs > 0n && res.timeoutMs <= 60000n,
                `handler saw timeout_ms=${res.timeoutMs}, want (0, 60000]`);
    });

    it("fails a slow call with DeadlineExceeded", async () => {
      const err = await rejection(client.echo({ message: "slow", sleepMs: 2000 }, { timeoutMs: 200 }));
      assert.equal(err.code, Code.DeadlineExceeded, `got ${Code[err.code]}: ${err.message}`);
      // The connection must still serve calls afterwards.
      const res = await client.echo({ message: "after deadline" });
      assert.equal(res.message, "after deadline");
    });

    it("streams Count 1..5", async () => {
      const got = [];
      for await (const m of client.count({ count: 5 })) got.push(m.n);
      assert.deepEqual(got, [1, 2, 3, 4, 5]);
    });

    it("streams with intervals and trailers arrive after the last message", async () => {
      const got = [];
      let trailer;
      for await (const m of client.count({ count: 3, intervalMs: 20 }, {
        onTrailer: (t) => { trailer = t; },
      })) got.push(m.n);
      assert.deepEqual(got, [1, 2, 3]);
      assert.ok(trailer, "onTrailer was not called for a stream");
    });

    it("streams 200 messages", async () => {
      let n = 0;
      for await (const m of client.count({ count: 200 })) assert.equal(m.n, ++n);
      assert.equal(n, 200);
    });

    it("ends a stream with an error after its messages", async () => {
      const got = [];
      const err = await rejection((async () => {
        for await (const m of client.count({ count: 2, failCode: "aborted" })) got.push(m.n);
        return got;
      })());
      assert.deepEqual(got, [1, 2]);
      assert.equal(err.code, Code.Aborted, `got ${Code[err.code]}: ${err.message}`);
    });

    it("ends an empty stream with an error", async () => {
      const got = [];
      const err = await rejection((async () => {
        for await (const m of client.count({ count: 0, failCode: "failed_precondition" })) {
          got.push(m.n);
        }
        return got;
      })());
      assert.deepEqual(got, []);
      assert.equal(err.code, Code.FailedPrecondition, `got ${Code[err.code]}: ${err.message}`);
    });

    it("runs 40 calls and 8 streams at once", async () => {
      const calls = Array.from({ length: 40 }, (_, i) =>
        client.echo({ message: `c${i}`, number: BigInt(i), sleepMs: i % 7 }));
      const streams = Array.from({ length: 8 }, async (_, i) => {
        const got = [];
        for await (const m of client.count({ count: i + 1, intervalMs: 5 })) got.push(m.n);
        return got;
      });
      const results = await Promise.all(calls);
      results.forEach((r, i) => {
        assert.equal(r.message, `c${i}`);
        assert.equal(r.number, BigInt(i));
      });
      (await Promise.all(streams)).forEach((got, i) =>
        assert.deepEqual(got, Array.from({ length: i + 1 }, (_, k) => k + 1)));
    });

    it("cancels a stream from the client and keeps serving", async () => {
      const abort = new AbortController();
      const got = [];
      const err = await rejection((async () => {
        for await (const m of client.count({ count: 1000, intervalMs: 20 },
                                           { signal: abort.signal })) {
          got.push(m.n);
          if (m.n === 2) abort.abort();
        }
        return got;
      })());
      assert.equal(err.code, Code.Canceled, `got ${Code[err.code]}: ${err.message}`);
      // A message already in the client's buffers may still be delivered after abort().
      assert.deepEqual(got.slice(0, 2), [1, 2]);
      assert.ok(got.length < 10, `stream went on after cancel: ${got.length} messages`);
      const res = await client.echo({ message: "after cancel" });
      assert.equal(res.message, "after cancel");
    });

    it("fails a slow stream with DeadlineExceeded", async () => {
      const got = [];
      const err = await rejection((async () => {
        for await (const m of client.count({ count: 100, intervalMs: 200 }, { timeoutMs: 1000 })) {
          got.push(m.n);
        }
        return got;
      })());
      assert.equal(err.code, Code.DeadlineExceeded, `got ${Code[err.code]}: ${err.message}`);
      // The stream would take 20 s; how many messages fit in the 1 s depends on the machine.
      assert.ok(got.length < 100, `got all ${got.length} messages`);
      got.forEach((n, i) => assert.equal(n, i + 1));
    });

    it("calls EchoGet", async () => {
      const res = await client.echoGet({ message: "get me", number: 3n });
      assert.equal(res.message, "get me");
      assert.equal(res.number, 3n);
    });

    if (v.connect) {
      it("calls EchoGet with HTTP GET", async () => {
        // useHttpGet applies to NO_SIDE_EFFECTS methods only; Echo stays a POST.
        const get = createClient(service, v.make({ useHttpGet: true }));
        let header;
        const res = await get.echoGet({ message: "get me?&=+/", number: 9n,
                                        payload: new Uint8Array([0xff, 0xfb, 0]) },
                                      { headers: { "x-test-via": "get" }, onHeader: (h) => { header = h; } });
        assert.equal(res.message, "get me?&=+/");
        assert.equal(res.number, 9n);
        assertBytes(res.payload, new Uint8Array([0xff, 0xfb, 0]), "payload");
        assert.equal(res.codec, v.codec);
        assert.deepEqual(res.headers, { "x-test-via": "get" });
        assert.equal(header.get("x-echo-header"), "get me?&=+/");
        const err = await rejection(get.echoGet({ message: "gone", failCode: "not_found" }));
        assert.equal(err.code, Code.NotFound, `got ${Code[err.code]}: ${err.message}`);
        assert.equal(err.rawMessage, "gone");
      });
    }
  });
}

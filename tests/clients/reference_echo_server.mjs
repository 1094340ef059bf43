// A reference implementation of metald.test.v1.EchoService on connect-node's own server
// (Connect, gRPC and gRPC-Web; HTTP/1.1 and h2c on one port, like metald). It exists to prove
// that the client tests in this folder are right: they must pass against this server before
// any failure against metald's rpc_echo_server can be blamed on metald.
//
// Usage: node reference_echo_server.mjs --descriptors FILE [--listen 127.0.0.1:0]
// Prints "listening <host:port>" once bound, exits on SIGTERM/SIGINT.
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { parseArgs } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { codeFromString } from "@connectrpc/connect/protocol-connect";
import { loadEchoService } from "./echo_schema.mjs";

const { values } = parseArgs({
  options: {
    descriptors: { type: "string" },
    listen: { type: "string", default: "127.0.0.1:0" },
  },
});
const { service } = loadEchoService(values.descriptors ?? process.env.ECHO_DESCRIPTORS);

// Matches metald's receive limit: a 5 MiB body must be refused with resource_exhausted.
const READ_MAX_BYTES = 4 * 1024 * 1024;

function failure(code, message) {
  const c = codeFromString(code);
  return new ConnectError(message, c === undefined ? Code.Unknown : c);
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      reject(signal.reason);
    }, { once: true });
  });
}

function codecOf(ctx) {
  if (ctx.requestMethod === "GET") {
    return new URL(ctx.url).searchParams.get("encoding") === "json" ? "json" : "proto";
  }
  return (ctx.requestHeader.get("content-type") ?? "").includes("json") ? "json" : "proto";
}

async function echo(req, ctx) {
  if (req.sleepMs > 0) await sleep(req.sleepMs, ctx.signal);
  // Like metald's echo service: a message that is no valid header value sets no header.
  if (/^[\x20-\x7e]*$/.test(req.message)) ctx.responseHeader.set("x-echo-header", req.message);
  ctx.responseTrailer.set("x-echo-trailer", String(req.number));
  if (req.failCode !== "") throw failure(req.failCode, req.message);
  const headers = {};
  ctx.requestHeader.forEach((v, k) => {
    if (k.startsWith("x-test-")) headers[k] = v;
  });
  return {
    message: req.message,
    number: req.number,
    payload: req.responseBytes > 0 ? new Uint8Array(req.responseBytes).fill(0x78) : req.payload,
    headers,
    protocol: ctx.protocolName,
    codec: codecOf(ctx),
    timeoutMs: BigInt(Math.max(0, Math.floor(ctx.timeoutMs() ?? 0))),
  };
}

async function* count(req, ctx) {
  for (let n = 1; n <= req.count; n++) {
    if (n > 1 && req.intervalMs > 0) await sleep(req.intervalMs, ctx.signal);
    yield { n };
  }
  if (req.failCode !== "") throw failure(req.failCode, `count failed after ${req.count}`);
}

const handler = connectNodeAdapter({
  readMaxBytes: READ_MAX_BYTES,
  routes: (router) => router.service(service, { echo, echoGet: echo, count }),
});

// One port for HTTP/1.1 and h2c prior knowledge: the first bytes of a connection decide.
const h1 = http.createServer(handler);
const h2 = http2.createServer({}, handler);
const preface = Buffer.from("PRI * HTTP/2.0");
const server = net.createServer((socket) => {
  socket.once("readable", function sniff() {
    const head = socket.read();
    if (head === null) return socket.once("readable", sniff);
    socket.unshift(head);
    const isH2 = head.subarray(0, preface.length).equals(preface.subarray(0, head.length));
    (isH2 ? h2 : h1).emit("connection", socket);
  });
});
const [host, port] = [values.listen.slice(0, values.listen.lastIndexOf(":")),
                      Number(values.listen.slice(values.listen.lastIndexOf(":") + 1))];
server.listen(port, host.replace(/^\[|\]$/g, ""), () => {
  const a = server.address();
  console.log(`listening ${a.family === "IPv6" ? `[${a.address}]` : a.address}:${a.port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => process.exit(0));
}

#!/usr/bin/env python3
"""Writes the seed corpora of the rpc fuzz targets into corpus/<target>/ next to this script.

Seeds are real requests of the protocols metald serves (Connect unary/GET/streaming, gRPC,
gRPC-Web; identity and gzip) against the fuzz router of fuzz_harness.h (/test.Echo/Say,
/test.Echo/Count, /healthz), as raw HTTP/1.1 bytes, as HTTP/2 frame sequences (client preface,
SETTINGS, HEADERS with HPACK literals, DATA), and as inputs of the codec targets.

Deterministic (fixed gzip mtime), so rerunning it rewrites identical files:
    python3 metald/rpc/fuzz/gen_seeds.py
Files are named after what they hold; the fuzzers never write into these folders
(tools/run-fuzzers.sh puts new inputs in a temporary directory).
"""

import base64
import gzip
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

SAY = "/test.Echo/Say"
COUNT = "/test.Echo/Count"


def string_value(s: bytes) -> bytes:
    """google.protobuf.StringValue{value: s} in binary proto (field 1, length-delimited)."""
    return b"\x0a" + varint(len(s)) + s if s else b""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# ---- requests: (name, method, path, query, headers, body) ----------------------------------

def requests():
    pv = b"\x0a\x05world"
    return [
        ("connect_unary_proto", "POST", SAY, "",
         [("content-type", "application/proto"), ("connect-protocol-version", "1")], pv),
        ("connect_unary_json", "POST", SAY, "",
         [("content-type", "application/json"), ("connect-protocol-version", "1"),
          ("connect-timeout-ms", "5000")], b'"world"'),
        ("connect_unary_error", "POST", SAY, "",
         [("content-type", "application/json")], b'"err:bad \\u00ff input"'),
        ("connect_unary_meta", "POST", SAY, "",
         [("content-type", "application/proto"), ("accept-encoding", "gzip")],
         string_value(b"meta:abc")),
        ("connect_unary_gzip", "POST", SAY, "",
         [("content-type", "application/proto"), ("content-encoding", "gzip"),
          ("accept-encoding", "gzip, identity")], gz(string_value(b"x" * 1500))),
        ("connect_unary_bad_version", "POST", SAY, "",
         [("content-type", "application/json"), ("connect-protocol-version", "2")], b'"x"'),
        ("connect_unary_bad_encoding", "POST", SAY, "",
         [("content-type", "application/json"), ("content-encoding", "br")], b'"x"'),
        ("connect_get_json", "GET", SAY, "encoding=json&message=%22world%22&connect=v1", [], b""),
        ("connect_get_base64", "GET", SAY,
         "encoding=proto&base64=1&message=" + base64.urlsafe_b64encode(pv).decode().rstrip("="),
         [("accept-encoding", "gzip")], b""),
        ("connect_get_gzip", "GET", SAY,
         "encoding=proto&base64=1&compression=gzip&message="
         + base64.urlsafe_b64encode(gz(pv)).decode(), [], b""),
        ("connect_stream_proto", "POST", COUNT, "",
         [("content-type", "application/connect+proto"), ("connect-protocol-version", "1")],
         envelope(string_value(b"abc"))),
        ("connect_stream_json_err", "POST", COUNT, "",
         [("content-type", "application/connect+json"), ("connect-accept-encoding", "gzip")],
         envelope(b'"err:too many"')),
        ("connect_stream_gzip", "POST", COUNT, "",
         [("content-type", "application/connect+proto"), ("connect-content-encoding", "gzip")],
         envelope(gz(string_value(b"ab")), 1)),
        ("grpc_unary", "POST", SAY, "",
         [("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "1S")],
         envelope(pv)),
        ("grpc_unary_json", "POST", SAY, "",
         [("content-type", "application/grpc+json"), ("grpc-accept-encoding", "gzip")],
         envelope(b'"meta:v"')),
        ("grpc_unary_gzip", "POST", SAY, "",
         [("content-type", "application/grpc+proto"), ("grpc-encoding", "gzip")],
         envelope(gz(pv), 1)),
        ("grpc_unary_error", "POST", SAY, "",
         [("content-type", "application/grpc")], envelope(string_value(b"err:no\n%good"))),
        ("grpc_stream", "POST", COUNT, "",
         [("content-type", "application/grpc"), ("grpc-timeout", "100m")],
         envelope(string_value(b"xyz"))),
        ("grpc_unknown_method", "POST", "/test.Echo/Nope", "",
         [("content-type", "application/grpc")], envelope(b"")),
        ("grpc_two_messages", "POST", SAY, "",
         [("content-type", "application/grpc")], envelope(pv) + envelope(pv)),
        ("grpcweb_unary", "POST", SAY, "",
         [("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")], envelope(pv)),
        ("grpcweb_stream_json", "POST", COUNT, "",
         [("content-type", "application/grpc-web+json")], envelope(b'"err:late"')),
        ("healthz", "GET", "/healthz", "probe=1", [], b""),
        ("not_found", "GET", "/nope", "", [], b""),
        ("method_not_allowed", "PUT", SAY, "", [("content-type", "application/json")], b"{}"),
        ("unsupported_media", "POST", SAY, "", [("content-type", "text/plain")], b"hi"),
    ]


# ---- HTTP/1.1 -----------------------------------------------------------------------------

def http1(method, path, query, headers, body, extra=(), chunked=False, version="1.1"):
    target = path + ("?" + query if query else "")
    lines = [f"{method} {target} HTTP/{version}", "Host: localhost"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += list(extra)
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if chunked:
        out = b""
        for i in range(0, len(body), 3):
            part = body[i:i + 3]
            out += b"%x\r\n" % len(part) + part + b"\r\n"
        return head + out + b"0\r\n\r\n"
    return head + body


def http1_seeds():
    seeds = {}
    for name, method, path, query, headers, body in requests():
        seeds[name] = http1(method, path, query, headers, body)
    reqs = {r[0]: r for r in requests()}
    _, m, p, q, h, b = reqs["grpc_unary"]
    seeds["grpc_chunked"] = http1(m, p, q, h, b, chunked=True)
    _, m, p, q, h, b = reqs["connect_unary_json"]
    seeds["expect_continue"] = http1(m, p, q, h, b, extra=["Expect: 100-continue"])
    seeds["connection_close"] = http1(m, p, q, h, b, extra=["Connection: close"])
    seeds["pipelined"] = (http1("GET", "/healthz", "", [], b"")
                          + http1(*reqs["connect_unary_proto"][1:])
                          + http1(*reqs["grpc_unary"][1:])
                          + http1("GET", "/healthz", "", [], b"", extra=["Connection: close"]))
    seeds["http10"] = http1("GET", "/healthz", "", [], b"", version="1.0")
    seeds["head"] = http1("HEAD", "/healthz", "", [], b"")
    seeds["too_large"] = (b"POST " + SAY.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/proto\r\nContent-Length: 10000\r\n\r\n"
                          + b"\x0a" * 64)
    seeds["garbage"] = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"
    seeds["bad_header"] = b"GET / HTTP/1.1\r\nHost x\r\n\r\n"
    seeds["h2c_preface"] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    return seeds


# ---- HTTP/2 -------------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def hpack_int(value, prefix_bits, first_byte_flags=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(s: bytes):
    return hpack_int(len(s), 7) + s  # H=0: no Huffman coding


def hpack_literal(name: str, value: str, indexing=False):
    """Literal header field with a new name, without indexing (0x00) or with (0x40)."""
    return (b"\x40" if indexing else b"\x00") + hpack_string(name.encode()) + \
        hpack_string(value.encode())


def header_block(method, path, query, headers, indexing=False):
    target = path + ("?" + query if query else "")
    fields = [(":method", method), (":scheme", "http"), (":authority", "localhost"),
              (":path", target)] + list(headers)
    return b"".join(hpack_literal(k, v, indexing) for k, v in fields)


def h2_request(stream, method, path, query, headers, body, indexing=False, split_data=False):
    block = header_block(method, path, query, headers, indexing)
    if not body:
        return frame(HEADERS, END_HEADERS | END_STREAM, stream, block)
    out = frame(HEADERS, END_HEADERS, stream, block)
    if split_data and len(body) > 1:
        half = len(body) // 2
        out += frame(DATA, 0, stream, body[:half])
        out += frame(DATA, END_STREAM, stream, body[half:])
    else:
        out += frame(DATA, END_STREAM, stream, body)
    return out


def h2_seeds():
    start = PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 0x3, 100))
    seeds = {}
    for name, method, path, query, headers, body in requests():
        headers = [(k, v) for k, v in headers]
        seeds[name] = start + h2_request(1, method, path, query, headers, body) + \
            frame(SETTINGS, ACK, 0)
    reqs = {r[0]: r[1:] for r in requests()}
    # Several streams, some interleaved, with flow control and PING traffic.
    m, p, q, h, b = reqs["grpc_unary"]
    m2, p2, q2, h2, b2 = reqs["connect_stream_proto"]
    seeds["multi_stream"] = (start + frame(SETTINGS, ACK, 0)
                             + h2_request(1, m, p, q, h, b, split_data=True)
                             + h2_request(3, m2, p2, q2, h2, b2, indexing=True)
                             + h2_request(5, "GET", "/healthz", "", [], b"")
                             + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 65535))
                             + frame(PING, 0, 0, b"12345678"))
    # Static-table indexed fields (:method POST = 3, :scheme http = 6, :path / = 4).
    indexed = b"\x83\x86" + hpack_literal(":path", SAY) + hpack_literal(":authority", "x") + \
        hpack_literal("content-type", "application/grpc")
    seeds["indexed_fields"] = start + frame(HEADERS, END_HEADERS, 1, indexed) + \
        frame(DATA, END_STREAM, 1, envelope(b"\x0a\x01a"))
    # HEADERS split with CONTINUATION, padded and with priority.
    block = header_block(*reqs["connect_unary_json"][:4])
    pad = 4
    padded = bytes([pad]) + struct.pack(">IB", 0, 15) + block[:10] + b"\x00" * pad
    seeds["continuation_padded"] = (start + frame(HEADERS, PADDED | PRIORITY_FLAG, 1, padded)
                                    + frame(CONTINUATION, END_HEADERS, 1, block[10:])
                                    + frame(DATA, END_STREAM | PADDED, 1, b"\x02" + b'"w"'
                                            + b"\x00\x00"))
    # A client that resets its stream mid-request, then goes away.
    seeds["rst_goaway"] = (start + frame(HEADERS, END_HEADERS, 1, header_block(*reqs["grpc_unary"][:4]))
                           + frame(RST_STREAM, 0, 1, struct.pack(">I", 8))
                           + frame(PRIORITY, 0, 3, struct.pack(">IB", 1, 16))
                           + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
    # Request body over the 8 KiB session limit (fuzz_harness.h): answered early
    # (RejectTooLarge), the rest of the body is dropped.
    big = envelope(b"\x0a" + b"\x00" * 5000)
    big_req = frame(HEADERS, END_HEADERS, 1, header_block(*reqs["grpc_unary"][:4]))
    for _ in range(2):
        big_req += frame(DATA, 0, 1, big)
    seeds["too_large"] = start + big_req + frame(DATA, END_STREAM, 1, b"")
    seeds["bad_preface"] = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"
    seeds["settings_only"] = start + frame(SETTINGS, ACK, 0)
    seeds["trailers_in_request"] = (start + frame(HEADERS, END_HEADERS, 1,
                                                  header_block(*reqs["grpc_unary"][:4]))
                                    + frame(DATA, 0, 1, reqs["grpc_unary"][4])
                                    + frame(HEADERS, END_HEADERS | END_STREAM, 1,
                                            hpack_literal("x-trailer", "1")))
    return seeds


# ---- engine (text format of engine_fuzz.cc) -----------------------------------------------

def engine_seeds():
    seeds = {}
    for name, method, path, query, headers, body in requests():
        target = path + ("?" + query if query else "")
        head = f"{method} {target}\n" + "".join(f"{k}: {v}\n" for k, v in headers) + "\n"
        seeds[name] = head.encode() + body
    seeds["cancelled"] = (f"POST {SAY}\ncontent-type: application/grpc\nx-fuzz-cancel: 1\n\n"
                          .encode() + envelope(b"\x0a\x01a"))
    seeds["reject_too_large"] = f"!POST {SAY}\ncontent-type: application/connect+json\n\n".encode()
    seeds["reject_too_large_plain"] = f"!POST {SAY}\n\n".encode()
    return seeds


# ---- codec targets ------------------------------------------------------------------------

def envelope_seeds():
    return {
        "one": envelope(b"\x0a\x05world"),
        "two": envelope(b"a") + envelope(b"", 1),
        "end_stream": envelope(b'{"error":{"code":"internal"}}', 2),
        "grpc_web_trailers": envelope(b"x") + envelope(b"grpc-status: 0\r\n", 0x80),
        "truncated": envelope(b"abcdef")[:7],
        "over_limit": struct.pack(">BI", 0, 5000) + b"zz",
        "empty_payloads": envelope(b"") * 4,
    }


def connect_json_seeds():
    detail = base64.b64encode(b"\x0a\x03abc").decode().rstrip("=")
    return {
        "error_min": b'{"code":"not_found"}',
        "error_full": json.dumps({"code": "invalid_argument", "message": "bad \u00e9 input",
                                  "details": [{"type": "google.protobuf.StringValue",
                                               "value": detail,
                                               "debug": {"value": "abc"}}]}).encode(),
        "error_unknown_code": b'{"code":"teapot","message":"x","extra":[1,2]}',
        "error_bad_type": b'{"code":1}',
        "end_ok": b"{}",
        "end_meta": b'{"metadata":{"x-a":["1","2"],"x-b":[]}}',
        "end_error": json.dumps({"error": {"code": "unavailable", "message": "later"},
                                 "metadata": {"retry": ["5"]}}).encode(),
        "not_json": b'{"code":"internal"',
        "escapes": b'{"code":"aborted","message":"\\ud83d\\ude00 \\u0000 \\"q\\""}',
    }


def query_seeds():
    pv = base64.urlsafe_b64encode(b"\x0a\x05world").decode()
    return {
        "json": b"encoding=json&message=%7B%7D&connect=v1",
        "base64": f"encoding=proto&base64=1&message={pv}".encode(),
        "compressed": f"encoding=proto&base64=1&compression=gzip&message={pv}".encode(),
        "plus_space": b"a=b+c&&d&message=%22x%22&encoding=json&encoding=proto",
        "bad_escape": b"message=%G1&encoding=json",
        "empty": b"",
    }


def wire_misc_seeds():
    def sel(n, data):
        return bytes([n]) + data
    return {
        "trailers": sel(0, b"grpc-status: 0\r\ngrpc-message: ok%20\r\nx-a: 1\r\n"),
        "trailers_bad": sel(0, b"Grpc-Status:3\r\n continued\r\n"),
        "base64_std": sel(1, b"aGVsbG8gd29ybGQ="),
        "base64_url": sel(1, b"_-8"),
        "gzip": sel(2, gz(b"hello hello hello")),
        "gzip_two_members": sel(2, gz(b"a") + gz(b"b")),
        "gzip_bomb": sel(2, gz(b"\x00" * 200000)),
        "timeout_connect": sel(3, b"1500"),
        "timeout_grpc": sel(3, b"99999999H"),
        "timeout_grpc_ms": sel(3, b"250m"),
        "percent": sel(4, b"caf%C3%A9 %zz %"),
        "ct_grpc": sel(5, b"application/grpc+proto; charset=utf-8"),
        "ct_connect": sel(5, b"Application/Connect+JSON"),
        "ct_accept": sel(5, b"gzip;q=0, br, identity"),
        "grpc_status": sel(5, b"16"),
        "msg_proto": sel(6, b"\x0a\x05world"),
        "msg_json": sel(6, b'"w\\u00f6rld"'),
    }


def write(target, seeds):
    d = os.path.join(CORPUS, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in sorted(seeds.items()):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def main():
    write("http1", http1_seeds())
    write("http2", h2_seeds())
    write("engine", engine_seeds())
    write("envelope", envelope_seeds())
    write("connect_json", connect_json_seeds())
    write("query", query_seeds())
    write("wire_misc", wire_misc_seeds())


if __name__ == "__main__":
    main()

#pragma once
// Pure codecs of the Connect, gRPC and gRPC-Web wire protocols (spec:
// shared/design/connect-protocol.md): envelopes, Connect error and end-stream JSON, code ↔ HTTP
// status mapping, timeouts, grpc-message escaping, base64, gzip, Content-Type classification,
// gRPC-Web trailer blocks, header validation, Connect GET query parsing and message
// (de)serialisation for both codecs. Used by the server engine and the client.
//
// Every decoder takes untrusted bytes as std::string_view, never crashes, never throws and
// bounds its memory by its input (or by an explicit limit); they are fuzzed. Thread-safety: free
// functions without shared state; an EnvelopeDecoder is a value used by one thread at a time.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "metald/base/status.h"
#include "metald/rpc/call.h"
#include "metald/rpc/metadata.h"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace metald::rpc::wire {

// ---------------------------------------------------------------------------------------------
// Envelopes: flags (1 byte) + big-endian uint32 length + payload.

inline constexpr uint8_t kFlagCompressed = 0x01;
inline constexpr uint8_t kFlagEndStream = 0x02;        // Connect end-stream (JSON payload)
inline constexpr uint8_t kFlagGrpcWebTrailers = 0x80;  // gRPC-Web trailer block
inline constexpr size_t kEnvelopeHeaderBytes = 5;

struct Envelope {
  uint8_t flags = 0;
  std::string payload;
};

// Appends one envelope to *out. REQUIRES: payload.size() <= UINT32_MAX.
void AppendEnvelope(std::string* out, uint8_t flags, std::string_view payload);
std::string EncodeEnvelope(uint8_t flags, std::string_view payload);

// Incremental decoder: feed bytes split anywhere; whole envelopes come out in order.
// Invariant: after the first error every later Feed returns the same error.
class EnvelopeDecoder {
 public:
  // Payloads longer than max_payload_bytes are refused (resource_exhausted) from their header,
  // before any of the payload is buffered.
  explicit EnvelopeDecoder(size_t max_payload_bytes) : max_payload_bytes_(max_payload_bytes) {}

  // Appends every envelope completed by `bytes` to *out.
  base::Status Feed(std::string_view bytes, std::vector<Envelope>* out);
  // At end of input: OK when no envelope is partly read, invalid_argument when truncated.
  base::Status Finish() const;
  // True while an envelope is partly read.
  bool mid_envelope() const { return !buffer_.empty(); }

 private:
  size_t max_payload_bytes_;
  std::string buffer_;  // bytes of the envelope being read (header first)
  base::Status error_;
};

// Decodes a whole body. resource_exhausted when an envelope exceeds the limit,
// invalid_argument when the body ends inside an envelope.
base::Result<std::vector<Envelope>> DecodeEnvelopes(std::string_view body,
                                                    size_t max_payload_bytes);

// ---------------------------------------------------------------------------------------------
// Connect error JSON (§6.1) and end-stream JSON (§5).

struct ErrorDetail {
  std::string type;   // fully-qualified message name, without "type.googleapis.com/"
  std::string value;  // binary proto bytes (base64 only on the wire)
  std::string debug;  // optional JSON text for people; empty: none
};

struct ConnectError {
  base::StatusCode code = base::StatusCode::kUnknown;
  std::string message;
  std::vector<ErrorDetail> details;

  base::Status ToStatus() const { return base::Status(code, message); }
};

// {"code":"...","message":"...","details":[...]}: exactly those keys; "message" omitted when
// empty, "details" when there are none. Non-UTF-8 bytes in the message become U+FFFD.
// REQUIRES: !status.ok() (an OK status is encoded as "unknown").
std::string EncodeConnectError(const base::Status& status,
                               const std::vector<ErrorDetail>& details = {});
// The error object as text of a JSON object. invalid_argument for anything but an object with a
// string "code" (an unrecognised code name reads as unknown, as in connect-go), or for ill-typed
// message/details. Unknown keys are ignored.
base::Result<ConnectError> DecodeConnectError(std::string_view json);

struct EndStream {
  std::optional<ConnectError> error;  // absent on success
  Metadata metadata;                  // the trailers
};

// {"error":{...},"metadata":{"name":["v1","v2"]}}; "{}" for OK without trailers. Each name keeps
// its values in order; names appear in order of first use.
std::string EncodeEndStream(const base::Status& status, const Metadata& trailers,
                            const std::vector<ErrorDetail>& details = {});
// invalid_argument unless an object whose "error" (optional) is a valid error object and whose
// "metadata" (optional) maps names to arrays of strings.
base::Result<EndStream> DecodeEndStream(std::string_view json);

// ---------------------------------------------------------------------------------------------
// Codes and HTTP statuses.

// §6.2: the HTTP status of a Connect unary error (500 for OK or out-of-range codes).
int HttpStatusForCode(base::StatusCode code);
// §6.3: the code a client infers from a non-200 HTTP status without a Connect error body.
base::StatusCode CodeForHttpStatus(int http_status);
// gRPC status number → code; nullopt outside 0..16 or for text that is not a plain decimal.
std::optional<base::StatusCode> ParseGrpcStatus(std::string_view text);

// ---------------------------------------------------------------------------------------------
// Timeouts.

// Connect-Timeout-Ms: 1..10 ASCII digits. invalid_argument otherwise.
base::Result<std::chrono::milliseconds> ParseConnectTimeout(std::string_view text);
// grpc-timeout: 1..8 digits and a unit H M S m u n. Saturates at the largest nanoseconds value.
base::Result<std::chrono::nanoseconds> ParseGrpcTimeout(std::string_view text);
// The smallest unit that keeps the value under 10^8 ("0n" for zero or negative durations).
std::string FormatGrpcTimeout(std::chrono::nanoseconds timeout);

// ---------------------------------------------------------------------------------------------
// grpc-message percent-encoding: bytes < 0x20, > 0x7E and '%' become %XX (upper-case hex).
std::string PercentEncodeGrpcMessage(std::string_view message);
// Lenient inverse: a malformed escape is kept as is (receivers must not fail).
std::string PercentDecodeGrpcMessage(std::string_view text);

// ---------------------------------------------------------------------------------------------
// Base64 (RFC 4648). The standard alphabet is '+/' (§4), the URL alphabet '-_' (§5).
enum class Base64Alphabet { kStd, kUrl };
std::string Base64Encode(std::string_view data, Base64Alphabet alphabet = Base64Alphabet::kStd,
                         bool padded = false);
// Accepts padded and unpadded text of the given alphabet, nothing else (no whitespace).
// invalid_argument on a bad character, bad length or misplaced padding.
base::Result<std::string> Base64Decode(std::string_view text,
                                       Base64Alphabet alphabet = Base64Alphabet::kStd);

// ---------------------------------------------------------------------------------------------
// Compression.
enum class Compression { kIdentity, kGzip };

// "identity" (or empty) and "gzip", case-insensitively; nullopt for anything else.
std::optional<Compression> ParseCompression(std::string_view name);
std::string_view CompressionName(Compression c);
// What servers advertise in Accept-Encoding, Connect-Accept-Encoding and grpc-accept-encoding.
inline constexpr std::string_view kAcceptedCompressions = "gzip";
// The unimplemented error for an unsupported request encoding; lists the supported ones.
base::Status UnsupportedCompressionError(std::string_view name);
// Response compression (connect-go rules): the request's when it was compressed, else the first
// supported entry of the accept list (comma-separated, parameters ignored, q=0 skipped), else
// identity. An absent accept list means the request's compression.
Compression NegotiateCompression(Compression request_compression,
                                 std::optional<std::string_view> accept);

base::Result<std::string> GzipCompress(std::string_view data);
// Decompresses (concatenated members allowed). resource_exhausted as soon as the output would
// exceed max_bytes (bomb-safe: never allocates more than max_bytes plus one chunk);
// invalid_argument for corrupt or truncated data (including empty input).
base::Result<std::string> GzipDecompress(std::string_view data, size_t max_bytes);
base::Result<std::string> Compress(Compression c, std::string_view data);
// identity passes through, subject to the same limit.
base::Result<std::string> Decompress(Compression c, std::string_view data, size_t max_bytes);

// ---------------------------------------------------------------------------------------------
// Content-Type.
struct ContentTypeInfo {
  Protocol protocol = Protocol::kConnect;
  Codec codec = Codec::kProto;
  // The body is a stream of envelopes: Connect streaming, gRPC and gRPC-Web. False only for
  // Connect unary (application/json, application/proto).
  bool enveloped = false;
  std::string media_type;  // lower-case, without parameters: "application/grpc+proto"
};

// Classifies a request Content-Type (case-insensitive, parameters such as "; charset=utf-8"
// ignored). nullopt for unsupported types (including application/grpc-web-text).
std::optional<ContentTypeInfo> ClassifyContentType(std::string_view content_type);
// The canonical Content-Type for a protocol/codec ("application/connect+json", ...).
std::string_view ContentTypeFor(Protocol protocol, Codec codec, bool enveloped);
std::string_view CodecName(Codec codec);  // "proto", "json"
std::optional<Codec> ParseCodecName(std::string_view name);

// ---------------------------------------------------------------------------------------------
// Headers.

// Metadata names: [0-9a-z_.-]+ (lower-case, as Metadata stores them).
bool IsValidHeaderName(std::string_view name);
// Printable ASCII 0x20..0x7E.
bool IsValidHeaderValue(std::string_view value);
// Protocol headers that are never copied from user metadata (case-insensitive): Content-Type,
// Content-Length, Content-Encoding, Accept-Encoding, Host, User-Agent, Trailer, Date, TE,
// hop-by-hop headers, and every name starting with "trailer-", "connect-", "grpc-" or ':'.
bool IsReservedHeader(std::string_view name);

// gRPC-Web trailer block: "name: value\r\n" per field, lower-case names, no blank line.
// Fields with an invalid name or value are skipped.
std::string EncodeGrpcWebTrailers(const Metadata& trailers);
// Strict inverse (names are lower-cased): invalid_argument for a line without CRLF, a blank line,
// obsolete line folding, a missing colon or an invalid name.
base::Result<Metadata> DecodeGrpcWebTrailers(std::string_view block);

// ---------------------------------------------------------------------------------------------
// URL query strings.

// Percent-decodes one query component; '+' is a space. invalid_argument for a malformed escape.
base::Result<std::string> QueryUnescape(std::string_view text);
// Splits "a=1&b=2" into decoded pairs, in order; empty segments are skipped, "a" alone is
// ("a", "").
base::Result<std::vector<std::pair<std::string, std::string>>> ParseQuery(std::string_view query);

// The parameters of a Connect GET request (§4); the first occurrence of each wins, unknown ones
// are ignored.
struct ConnectGetQuery {
  std::optional<std::string> message;      // percent-decoded, still base64 when base64 is set
  std::optional<std::string> encoding;     // codec name
  bool base64 = false;                     // base64=1
  std::optional<std::string> compression;  // content coding of the message bytes
  std::optional<std::string> connect;      // "v1"
};
base::Result<ConnectGetQuery> ParseConnectGetQuery(std::string_view query);

// ---------------------------------------------------------------------------------------------
// Messages.

// Parses `data` into *message (cleared first): binary proto, or canonical proto3 JSON with
// unknown fields ignored. invalid_argument naming the message type on failure.
base::Status ParseMessage(Codec codec, std::string_view data, google::protobuf::Message* message);
// Binary proto, or proto3 JSON with lowerCamelCase names and default values omitted (as
// connect-go). internal on failure.
base::Result<std::string> SerializeMessage(Codec codec, const google::protobuf::Message& message);

}  // namespace metald::rpc::wire

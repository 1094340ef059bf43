#include "metald/rpc/wire.h"

#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <limits>
#include <nlohmann/json.hpp>

#include "metald/rpc/json.h"
#include "metald/rpc/json_reader.h"

namespace metald::rpc::wire {
namespace {

using Json = nlohmann::json;
// Insertion-ordered object for output, so keys read code, message, details.
using OrderedJson = nlohmann::ordered_json;

constexpr std::string_view kTypeUrlPrefix = "type.googleapis.com/";

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string DumpJson(const OrderedJson& j) {
  // replace: invalid UTF-8 in user text becomes U+FFFD instead of throwing.
  return j.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

OrderedJson ErrorToJson(const base::Status& status, const std::vector<ErrorDetail>& details) {
  OrderedJson j = OrderedJson::object();
  base::StatusCode code = status.ok() ? base::StatusCode::kUnknown : status.code();
  j["code"] = std::string(base::StatusCodeName(code));
  if (!status.message().empty()) j["message"] = status.message();
  if (!details.empty()) {
    OrderedJson arr = OrderedJson::array();
    for (const auto& d : details) {
      OrderedJson dj = OrderedJson::object();
      std::string_view type = d.type;
      if (type.starts_with(kTypeUrlPrefix)) type.remove_prefix(kTypeUrlPrefix.size());
      dj["type"] = std::string(type);
      dj["value"] = Base64Encode(d.value, Base64Alphabet::kStd, /*padded=*/false);
      if (!d.debug.empty()) {
        OrderedJson debug = OrderedJson::parse(d.debug, nullptr, /*allow_exceptions=*/false);
        if (!debug.is_discarded()) dj["debug"] = std::move(debug);
      }
      arr.push_back(std::move(dj));
    }
    j["details"] = std::move(arr);
  }
  return j;
}

base::Result<ConnectError> ErrorFromJson(const Json& j) {
  if (!j.is_object()) return base::InvalidArgumentError("Connect error is not a JSON object");
  auto code_it = j.find("code");
  if (code_it == j.end() || !code_it->is_string()) {
    return base::InvalidArgumentError("Connect error has no code");
  }
  ConnectError err;
  const std::string& name = code_it->get_ref<const std::string&>();
  std::optional<base::StatusCode> code = base::StatusCodeFromName(name);
  // No Connect code means OK; an unrecognised name reads as unknown (connect-go).
  err.code = (code && *code != base::StatusCode::kOk) ? *code : base::StatusCode::kUnknown;
  if (auto it = j.find("message"); it != j.end() && !it->is_null()) {
    if (!it->is_string())
      return base::InvalidArgumentError("Connect error message is not a string");
    err.message = it->get_ref<const std::string&>();
  }
  if (auto it = j.find("details"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return base::InvalidArgumentError("Connect error details is not an array");
    for (const auto& dj : *it) {
      if (!dj.is_object())
        return base::InvalidArgumentError("Connect error detail is not an object");
      auto type = dj.find("type");
      auto value = dj.find("value");
      if (type == dj.end() || !type->is_string() || value == dj.end() || !value->is_string()) {
        return base::InvalidArgumentError("Connect error detail needs string type and value");
      }
      ErrorDetail d;
      d.type = type->get_ref<const std::string&>();
      if (std::string_view(d.type).starts_with(kTypeUrlPrefix)) {
        d.type.erase(0, kTypeUrlPrefix.size());
      }
      ASSIGN_OR_RETURN(d.value, Base64Decode(value->get_ref<const std::string&>()));
      if (auto debug = dj.find("debug"); debug != dj.end()) {
        d.debug = debug->dump(-1, ' ', false, Json::error_handler_t::replace);
      }
      err.details.push_back(std::move(d));
    }
  }
  return err;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Envelopes.

void AppendEnvelope(std::string* out, uint8_t flags, std::string_view payload) {
  auto n = static_cast<uint32_t>(payload.size());
  char header[kEnvelopeHeaderBytes] = {static_cast<char>(flags), static_cast<char>(n >> 24),
                                       static_cast<char>(n >> 16), static_cast<char>(n >> 8),
                                       static_cast<char>(n)};
  out->append(header, kEnvelopeHeaderBytes);
  out->append(payload);
}

std::string EncodeEnvelope(uint8_t flags, std::string_view payload) {
  std::string out;
  out.reserve(kEnvelopeHeaderBytes + payload.size());
  AppendEnvelope(&out, flags, payload);
  return out;
}

base::Status EnvelopeDecoder::Feed(std::string_view bytes, std::vector<Envelope>* out) {
  if (!error_.ok()) return error_;
  while (!bytes.empty()) {
    if (buffer_.size() < kEnvelopeHeaderBytes) {
      size_t take = std::min(bytes.size(), kEnvelopeHeaderBytes - buffer_.size());
      buffer_.append(bytes.substr(0, take));
      bytes.remove_prefix(take);
      if (buffer_.size() < kEnvelopeHeaderBytes) break;
    }
    auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(buffer_[i])); };
    size_t length = (b(1) << 24) | (b(2) << 16) | (b(3) << 8) | b(4);
    if (length > max_payload_bytes_) {
      error_ = base::ResourceExhaustedError("Message size " + std::to_string(length) +
                                            " exceeds the limit of " +
                                            std::to_string(max_payload_bytes_) + " bytes");
      buffer_.clear();
      return error_;
    }
    size_t have = buffer_.size() - kEnvelopeHeaderBytes;
    size_t take = std::min(bytes.size(), length - have);
    buffer_.append(bytes.substr(0, take));
    bytes.remove_prefix(take);
    if (buffer_.size() - kEnvelopeHeaderBytes == length) {
      Envelope e;
      e.flags = static_cast<uint8_t>(buffer_[0]);
      e.payload = buffer_.substr(kEnvelopeHeaderBytes);
      out->push_back(std::move(e));
      buffer_.clear();
    }
  }
  return base::OkStatus();
}

base::Status EnvelopeDecoder::Finish() const {
  if (!error_.ok()) return error_;
  if (!buffer_.empty()) return base::InvalidArgumentError("Truncated message envelope");
  return base::OkStatus();
}

base::Result<std::vector<Envelope>> DecodeEnvelopes(std::string_view body,
                                                    size_t max_payload_bytes) {
  EnvelopeDecoder decoder(max_payload_bytes);
  std::vector<Envelope> out;
  RETURN_IF_ERROR(decoder.Feed(body, &out));
  RETURN_IF_ERROR(decoder.Finish());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Connect error and end-stream JSON.

std::string EncodeConnectError(const base::Status& status,
                               const std::vector<ErrorDetail>& details) {
  return DumpJson(ErrorToJson(status, details));
}

base::Result<ConnectError> DecodeConnectError(std::string_view json) {
  Json j = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return base::InvalidArgumentError("Connect error is not valid JSON");
  return ErrorFromJson(j);
}

std::string EncodeEndStream(const base::Status& status, const Metadata& trailers,
                            const std::vector<ErrorDetail>& details) {
  OrderedJson j = OrderedJson::object();
  if (!status.ok()) j["error"] = ErrorToJson(status, details);
  if (!trailers.empty()) {
    OrderedJson md = OrderedJson::object();
    for (const auto& [name, value] : trailers) {
      OrderedJson& values = md[name];
      if (values.is_null()) values = OrderedJson::array();
      values.push_back(value);
    }
    j["metadata"] = std::move(md);
  }
  return DumpJson(j);
}

base::Result<EndStream> DecodeEndStream(std::string_view json) {
  Json j = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return base::InvalidArgumentError("End-stream message is not a JSON object");
  }
  EndStream es;
  if (auto it = j.find("error"); it != j.end()) {
    // {"error": null} is invalid (spec §5).
    ASSIGN_OR_RETURN(ConnectError err, ErrorFromJson(*it));
    es.error = std::move(err);
  }
  if (auto it = j.find("metadata"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return base::InvalidArgumentError("End-stream metadata is not an object");
    for (const auto& [name, values] : it->items()) {
      if (!values.is_array()) {
        return base::InvalidArgumentError("End-stream metadata values are not an array");
      }
      for (const auto& v : values) {
        if (!v.is_string()) {
          return base::InvalidArgumentError("End-stream metadata value is not a string");
        }
        es.metadata.Add(name, v.get_ref<const std::string&>());
      }
    }
  }
  return es;
}

// ---------------------------------------------------------------------------------------------
// Codes.

int HttpStatusForCode(base::StatusCode code) {
  using C = base::StatusCode;
  switch (code) {
    case C::kCancelled:
      return 499;
    case C::kUnknown:
      return 500;
    case C::kInvalidArgument:
      return 400;
    case C::kDeadlineExceeded:
      return 504;
    case C::kNotFound:
      return 404;
    case C::kAlreadyExists:
      return 409;
    case C::kPermissionDenied:
      return 403;
    case C::kResourceExhausted:
      return 429;
    case C::kFailedPrecondition:
      return 400;
    case C::kAborted:
      return 409;
    case C::kOutOfRange:
      return 400;
    case C::kUnimplemented:
      return 501;
    case C::kInternal:
      return 500;
    case C::kUnavailable:
      return 503;
    case C::kDataLoss:
      return 500;
    case C::kUnauthenticated:
      return 401;
    case C::kOk:
      break;
  }
  return 500;
}

base::StatusCode CodeForHttpStatus(int http_status) {
  using C = base::StatusCode;
  switch (http_status) {
    case 400:
      return C::kInternal;
    case 401:
      return C::kUnauthenticated;
    case 403:
      return C::kPermissionDenied;
    case 404:
      return C::kUnimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return C::kUnavailable;
    default:
      return C::kUnknown;
  }
}

std::optional<base::StatusCode> ParseGrpcStatus(std::string_view text) {
  if (!AllDigits(text) || text.size() > 2) return std::nullopt;
  int v = 0;
  for (char c : text) v = v * 10 + (c - '0');
  if (v > 16) return std::nullopt;
  return static_cast<base::StatusCode>(v);
}

// ---------------------------------------------------------------------------------------------
// Timeouts.

base::Result<std::chrono::milliseconds> ParseConnectTimeout(std::string_view text) {
  if (!AllDigits(text) || text.size() > 10) {
    return base::InvalidArgumentError("Invalid Connect-Timeout-Ms: must be 1 to 10 digits");
  }
  int64_t v = 0;
  for (char c : text) v = v * 10 + (c - '0');
  return std::chrono::milliseconds(v);
}

base::Result<std::chrono::nanoseconds> ParseGrpcTimeout(std::string_view text) {
  if (text.size() < 2 || text.size() > 9 || !AllDigits(text.substr(0, text.size() - 1))) {
    return base::InvalidArgumentError("Invalid grpc-timeout: must be 1 to 8 digits and a unit");
  }
  int64_t v = 0;
  for (char c : text.substr(0, text.size() - 1)) v = v * 10 + (c - '0');
  int64_t unit_ns = 0;
  switch (text.back()) {
    case 'H':
      unit_ns = 3'600'000'000'000;
      break;
    case 'M':
      unit_ns = 60'000'000'000;
      break;
    case 'S':
      unit_ns = 1'000'000'000;
      break;
    case 'm':
      unit_ns = 1'000'000;
      break;
    case 'u':
      unit_ns = 1'000;
      break;
    case 'n':
      unit_ns = 1;
      break;
    default:
      return base::InvalidArgumentError("Invalid grpc-timeout unit");
  }
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (v > kMax / unit_ns) return std::chrono::nanoseconds(kMax);
  return std::chrono::nanoseconds(v * unit_ns);
}

std::string FormatGrpcTimeout(std::chrono::nanoseconds timeout) {
  int64_t ns = timeout.count();
  if (ns <= 0) return "0n";
  constexpr int64_t kLimit = 100'000'000;  // values stay under 10^8 (8 digits)
  struct Unit {
    int64_t ns;
    char suffix;
  };
  constexpr std::array<Unit, 6> kUnits = {{{1, 'n'},
                                           {1'000, 'u'},
                                           {1'000'000, 'm'},
                                           {1'000'000'000, 'S'},
                                           {60'000'000'000, 'M'},
                                           {3'600'000'000'000, 'H'}}};
  for (const Unit& u : kUnits) {
    // Round up so the peer never sees a shorter deadline than ours.
    int64_t v = ns / u.ns + (ns % u.ns != 0 ? 1 : 0);
    if (v < kLimit) return std::to_string(v) + u.suffix;
  }
  return std::to_string(kLimit - 1) + "H";
}

// ---------------------------------------------------------------------------------------------
// grpc-message.

std::string PercentEncodeGrpcMessage(std::string_view message) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(message.size());
  for (char ch : message) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c > 0x7E || c == '%') {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    } else {
      out.push_back(ch);
    }
  }
  return out;
}

std::string PercentDecodeGrpcMessage(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && HexValue(text[i + 1]) >= 0 &&
        HexValue(text[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(text[i + 1]) * 16 + HexValue(text[i + 2])));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Base64.

namespace {
constexpr std::string_view kStdChars =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::string_view kUrlChars =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int Base64Value(char c, Base64Alphabet alphabet) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (alphabet == Base64Alphabet::kStd) {
    if (c == '+') return 62;
    if (c == '/') return 63;
  } else {
    if (c == '-') return 62;
    if (c == '_') return 63;
  }
  return -1;
}
}  // namespace

std::string Base64Encode(std::string_view data, Base64Alphabet alphabet, bool padded) {
  std::string_view chars = alphabet == Base64Alphabet::kStd ? kStdChars : kUrlChars;
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<uint8_t>(data[k])); };
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    out.push_back(chars[(v >> 18) & 63]);
    out.push_back(chars[(v >> 12) & 63]);
    out.push_back(chars[(v >> 6) & 63]);
    out.push_back(chars[v & 63]);
  }
  size_t rest = data.size() - i;
  if (rest == 1) {
    uint32_t v = byte(i) << 16;
    out.push_back(chars[(v >> 18) & 63]);
    out.push_back(chars[(v >> 12) & 63]);
    if (padded) out.append("==");
  } else if (rest == 2) {
    uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8);
    out.push_back(chars[(v >> 18) & 63]);
    out.push_back(chars[(v >> 12) & 63]);
    out.push_back(chars[(v >> 6) & 63]);
    if (padded) out.push_back('=');
  }
  return out;
}

base::Result<std::string> Base64Decode(std::string_view text, Base64Alphabet alphabet) {
  // Padding is allowed only on text whose length is a multiple of 4, and only at the end.
  if (text.size() % 4 == 0 && !text.empty()) {
    size_t pad = 0;
    while (pad < 2 && !text.empty() && text.back() == '=') {
      text.remove_suffix(1);
      ++pad;
    }
  }
  if (text.size() % 4 == 1) return base::InvalidArgumentError("Invalid base64 length");
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = Base64Value(c, alphabet);
    if (v < 0) return base::InvalidArgumentError("Invalid base64 character");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Compression.

std::optional<Compression> ParseCompression(std::string_view name) {
  name = TrimOws(name);
  if (name.empty() || AsciiIEquals(name, "identity")) return Compression::kIdentity;
  if (AsciiIEquals(name, "gzip")) return Compression::kGzip;
  return std::nullopt;
}

std::string_view CompressionName(Compression c) {
  return c == Compression::kGzip ? "gzip" : "identity";
}

base::Status UnsupportedCompressionError(std::string_view name) {
  return base::UnimplementedError("Unknown compression \"" + std::string(name) +
                                  "\": supported encodings are gzip, identity");
}

Compression NegotiateCompression(Compression request_compression,
                                 std::optional<std::string_view> accept) {
  if (request_compression != Compression::kIdentity) return request_compression;
  if (!accept) return request_compression;
  std::string_view rest = *accept;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    std::string_view name = item;
    bool refused = false;
    if (size_t semi = item.find(';'); semi != std::string_view::npos) {
      name = item.substr(0, semi);
      std::string params = AsciiLower(item.substr(semi + 1));
      std::string_view p = TrimOws(params);
      if (p.starts_with("q=")) {
        std::string_view q = p.substr(2);
        refused = !q.empty() &&
                  std::all_of(q.begin(), q.end(), [](char c) { return c == '0' || c == '.'; });
      }
    }
    name = TrimOws(name);
    if (refused || name.empty() || AsciiIEquals(name, "identity")) continue;
    if (auto c = ParseCompression(name); c) return *c;
  }
  return Compression::kIdentity;
}

base::Result<std::string> GzipCompress(std::string_view data) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return base::InternalError("Cannot initialise gzip");
  }
  std::string out;
  char buf[16384];
  int rc = Z_OK;
  do {
    // Feed at most UINT_MAX bytes per call: avail_in is a 32-bit count.
    if (zs.avail_in == 0 && !data.empty()) {
      size_t n = std::min<size_t>(data.size(), std::numeric_limits<uInt>::max());
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
      zs.avail_in = static_cast<uInt>(n);
      data.remove_prefix(n);
    }
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = deflate(&zs, data.empty() ? Z_FINISH : Z_NO_FLUSH);
    if (rc == Z_STREAM_ERROR) {
      deflateEnd(&zs);
      return base::InternalError("gzip compression failed");
    }
    out.append(buf, sizeof(buf) - zs.avail_out);
  } while (rc != Z_STREAM_END);
  deflateEnd(&zs);
  return out;
}

base::Result<std::string> GzipDecompress(std::string_view data, size_t max_bytes) {
  if (data.empty()) return base::InvalidArgumentError("Invalid gzip data: empty");
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) return base::InternalError("Cannot initialise gunzip");
  std::string out;
  char buf[16384];
  base::Status error;
  bool member_done = false;
  while (true) {
    if (zs.avail_in == 0 && !data.empty()) {
      size_t n = std::min<size_t>(data.size(), std::numeric_limits<uInt>::max());
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
      zs.avail_in = static_cast<uInt>(n);
      data.remove_prefix(n);
    }
    if (member_done) {
      if (zs.avail_in == 0) break;  // all members read
      // Another gzip member follows (concatenated streams are valid gzip).
      if (inflateReset(&zs) != Z_OK) {
        error = base::InternalError("gunzip reset failed");
        break;
      }
      member_done = false;
    }
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    int rc = inflate(&zs, Z_NO_FLUSH);
    size_t produced = sizeof(buf) - zs.avail_out;
    if (produced > max_bytes - out.size()) {
      error = base::ResourceExhaustedError("Decompressed message exceeds the limit of " +
                                           std::to_string(max_bytes) + " bytes");
      break;
    }
    out.append(buf, produced);
    if (rc == Z_STREAM_END) {
      member_done = true;
      continue;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR && produced == 0 && zs.avail_in == 0 && data.empty()) {
      error = base::InvalidArgumentError("Invalid gzip data: truncated");
      break;
    }
    if (rc == Z_BUF_ERROR) continue;
    error = base::InvalidArgumentError("Invalid gzip data");
    break;
  }
  inflateEnd(&zs);
  if (!error.ok()) return error;
  return out;
}

base::Result<std::string> Compress(Compression c, std::string_view data) {
  if (c == Compression::kGzip) return GzipCompress(data);
  return std::string(data);
}

base::Result<std::string> Decompress(Compression c, std::string_view data, size_t max_bytes) {
  if (c == Compression::kGzip) return GzipDecompress(data, max_bytes);
  if (data.size() > max_bytes) {
    return base::ResourceExhaustedError("Message size " + std::to_string(data.size()) +
                                        " exceeds the limit of " + std::to_string(max_bytes) +
                                        " bytes");
  }
  return std::string(data);
}

// ---------------------------------------------------------------------------------------------
// Content-Type.

std::optional<ContentTypeInfo> ClassifyContentType(std::string_view content_type) {
  std::string_view media = content_type.substr(0, content_type.find(';'));
  ContentTypeInfo info;
  info.media_type = AsciiLower(TrimOws(media));
  std::string_view m = info.media_type;
  if (m == "application/json" || m == "application/proto") {
    info.protocol = Protocol::kConnect;
    info.codec = m == "application/json" ? Codec::kJson : Codec::kProto;
    info.enveloped = false;
    return info;
  }
  auto suffix_codec = [](std::string_view rest, bool bare_ok) -> std::optional<Codec> {
    if (rest.empty()) return bare_ok ? std::optional<Codec>(Codec::kProto) : std::nullopt;
    if (rest == "+proto") return Codec::kProto;
    if (rest == "+json") return Codec::kJson;
    return std::nullopt;
  };
  std::optional<Codec> codec;
  if (m.starts_with("application/connect")) {
    info.protocol = Protocol::kConnect;
    codec = suffix_codec(m.substr(19), /*bare_ok=*/false);
  } else if (m.starts_with("application/grpc-web")) {
    info.protocol = Protocol::kGrpcWeb;
    codec = suffix_codec(m.substr(20), /*bare_ok=*/true);
  } else if (m.starts_with("application/grpc")) {
    info.protocol = Protocol::kGrpc;
    codec = suffix_codec(m.substr(16), /*bare_ok=*/true);
  }
  if (!codec) return std::nullopt;
  info.codec = *codec;
  info.enveloped = true;
  return info;
}

std::string_view ContentTypeFor(Protocol protocol, Codec codec, bool enveloped) {
  const bool json = codec == Codec::kJson;
  switch (protocol) {
    case Protocol::kConnect:
      if (enveloped) return json ? "application/connect+json" : "application/connect+proto";
      return json ? "application/json" : "application/proto";
    case Protocol::kGrpc:
      return json ? "application/grpc+json" : "application/grpc+proto";
    case Protocol::kGrpcWeb:
      return json ? "application/grpc-web+json" : "application/grpc-web+proto";
  }
  return json ? "application/json" : "application/proto";
}

std::string_view CodecName(Codec codec) { return codec == Codec::kJson ? "json" : "proto"; }

std::optional<Codec> ParseCodecName(std::string_view name) {
  if (name == "proto") return Codec::kProto;
  if (name == "json") return Codec::kJson;
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Headers.

bool IsValidHeaderName(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
  });
}

bool IsValidHeaderValue(std::string_view value) {
  return std::all_of(value.begin(), value.end(), [](char c) { return c >= 0x20 && c <= 0x7E; });
}

bool IsReservedHeader(std::string_view name) {
  static constexpr std::array<std::string_view, 15> kReserved = {
      "content-type", "content-length",   "content-encoding", "accept-encoding",
      "host",         "user-agent",       "trailer",          "date",
      "te",           "connection",       "keep-alive",       "transfer-encoding",
      "upgrade",      "proxy-connection", "accept-post"};
  for (std::string_view r : kReserved) {
    if (AsciiIEquals(name, r)) return true;
  }
  std::string lower = AsciiLower(name);
  std::string_view l = lower;
  return l.starts_with("trailer-") || l.starts_with("connect-") || l.starts_with("grpc-") ||
         l.starts_with(":");
}

std::string EncodeGrpcWebTrailers(const Metadata& trailers) {
  std::string out;
  for (const auto& [name, value] : trailers) {
    std::string lower = AsciiLower(name);
    if (!IsValidHeaderName(lower) || !IsValidHeaderValue(value)) continue;
    out += lower;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  return out;
}

base::Result<Metadata> DecodeGrpcWebTrailers(std::string_view block) {
  Metadata md;
  while (!block.empty()) {
    size_t eol = block.find("\r\n");
    if (eol == std::string_view::npos) {
      return base::InvalidArgumentError("gRPC-Web trailer line does not end with CRLF");
    }
    std::string_view line = block.substr(0, eol);
    block.remove_prefix(eol + 2);
    if (line.empty()) return base::InvalidArgumentError("Blank line in gRPC-Web trailers");
    if (line.front() == ' ' || line.front() == '\t') {
      return base::InvalidArgumentError("Obsolete line folding in gRPC-Web trailers");
    }
    if (line.find('\n') != std::string_view::npos || line.find('\r') != std::string_view::npos) {
      return base::InvalidArgumentError("Bare CR or LF in gRPC-Web trailers");
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      return base::InvalidArgumentError("gRPC-Web trailer line has no colon");
    }
    std::string name = AsciiLower(line.substr(0, colon));
    if (!IsValidHeaderName(name)) {
      return base::InvalidArgumentError("Invalid gRPC-Web trailer name");
    }
    md.Add(name, TrimOws(line.substr(colon + 1)));
  }
  return md;
}

// ---------------------------------------------------------------------------------------------
// Query strings.

base::Result<std::string> QueryUnescape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%') {
      if (i + 2 >= text.size() || HexValue(text[i + 1]) < 0 || HexValue(text[i + 2]) < 0) {
        return base::InvalidArgumentError("Malformed percent-encoding in query");
      }
      out.push_back(static_cast<char>(HexValue(text[i + 1]) * 16 + HexValue(text[i + 2])));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

base::Result<std::vector<std::pair<std::string, std::string>>> ParseQuery(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string_view key = part.substr(0, eq);
    std::string_view value =
        eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1);
    ASSIGN_OR_RETURN(std::string k, QueryUnescape(key));
    ASSIGN_OR_RETURN(std::string v, QueryUnescape(value));
    out.emplace_back(std::move(k), std::move(v));
  }
  return out;
}

base::Result<ConnectGetQuery> ParseConnectGetQuery(std::string_view query) {
  ASSIGN_OR_RETURN(auto pairs, ParseQuery(query));
  ConnectGetQuery q;
  bool seen_base64 = false;
  for (auto& [k, v] : pairs) {
    if (k == "message") {
      if (!q.message) q.message = std::move(v);
    } else if (k == "encoding") {
      if (!q.encoding) q.encoding = std::move(v);
    } else if (k == "base64") {
      if (!seen_base64) q.base64 = v == "1";
      seen_base64 = true;
    } else if (k == "compression") {
      if (!q.compression) q.compression = std::move(v);
    } else if (k == "connect") {
      if (!q.connect) q.connect = std::move(v);
    }
  }
  return q;
}

// ---------------------------------------------------------------------------------------------
// Messages.

base::Status ParseMessage(Codec codec, std::string_view data, google::protobuf::Message* message) {
  message->Clear();
  const std::string& type = message->GetDescriptor()->full_name();
  if (codec == Codec::kProto) {
    if (data.size() > static_cast<size_t>(std::numeric_limits<int>::max()) ||
        !message->ParseFromArray(data.data(), static_cast<int>(data.size()))) {
      return base::InvalidArgumentError("Cannot unmarshal " + type + " from binary proto");
    }
    return base::OkStatus();
  }
  // Hot path: the direct reader (json_reader.h). It declines what it does not reproduce
  // exactly (unknown fields, well-known types, floats, anything malformed, ...); protobuf then
  // parses or reports the error as before.
  if (json::ReadMessage(data, message)) return base::OkStatus();
  message->Clear();
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  auto st = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(data.data(), data.size()), message, options);
  if (!st.ok()) {
    return base::InvalidArgumentError("Cannot unmarshal " + type + " from JSON: " +
                                      std::string(st.message().data(), st.message().size()));
  }
  return base::OkStatus();
}

base::Result<std::string> SerializeMessage(Codec codec, const google::protobuf::Message& message) {
  std::string out;
  if (codec == Codec::kProto) {
    if (!message.SerializeToString(&out)) {
      return base::InternalError("Cannot marshal " + message.GetDescriptor()->full_name());
    }
    return out;
  }
  // Hot path: the direct printer (json.h), byte-identical to protobuf's. It declines what it
  // cannot reproduce exactly (Any, invalid UTF-8, out-of-range times, ...); protobuf then
  // prints or reports the error as before.
  if (json::PrintMessage(message, &out)) return out;
  out.clear();
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = false;
  auto st = google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!st.ok()) {
    return base::InternalError("Cannot marshal " + message.GetDescriptor()->full_name() +
                               " to JSON");
  }
  return out;
}

}  // namespace metald::rpc::wire

// libFuzzer target: the small decoders of wire.h that see header values and bodies from peers.
// The first input byte picks the decoder (selector % 7), the rest is its input:
//   0 DecodeGrpcWebTrailers      4 PercentDecodeGrpcMessage / PercentEncodeGrpcMessage
//   1 Base64Decode / Encode      5 Content-Type, compression, codec and header-name helpers
//   2 GzipDecompress (limited)   6 ParseMessage / SerializeMessage (StringValue, both codecs)
//   3 ParseConnectTimeout / ParseGrpcTimeout / FormatGrpcTimeout
// Each checks a round-trip or bound property, not just "no crash". Seeds: corpus/wire_misc/.

#include <google/protobuf/wrappers.pb.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "metald/base/check.h"
#include "metald/rpc/call.h"
#include "metald/rpc/fuzz/fuzz_harness.h"
#include "metald/rpc/metadata.h"
#include "metald/rpc/wire.h"

namespace {

namespace wire = metald::rpc::wire;
using metald::rpc::Codec;
using metald::rpc::Metadata;

constexpr size_t kGzipLimit = 64u << 10;

void FuzzTrailers(std::string_view in) {
  auto trailers = wire::DecodeGrpcWebTrailers(in);
  if (!trailers.ok()) return;
  for (const auto& [name, value] : *trailers) METALD_CHECK(wire::IsValidHeaderName(name));
  // Encoding keeps the valid fields; they decode to the same list.
  std::string block = wire::EncodeGrpcWebTrailers(*trailers);
  auto again = wire::DecodeGrpcWebTrailers(block);
  METALD_CHECK(again.ok());
  Metadata valid;
  for (const auto& [name, value] : *trailers) {
    if (wire::IsValidHeaderValue(value)) valid.Add(name, value);
  }
  METALD_CHECK(again->entries() == valid.entries());
}

void FuzzBase64(std::string_view in) {
  for (auto alphabet : {wire::Base64Alphabet::kStd, wire::Base64Alphabet::kUrl}) {
    auto decoded = wire::Base64Decode(in, alphabet);
    if (decoded.ok()) METALD_CHECK(decoded->size() <= in.size());
    for (bool padded : {false, true}) {
      std::string text = wire::Base64Encode(in, alphabet, padded);
      auto back = wire::Base64Decode(text, alphabet);
      METALD_CHECK(back.ok() && *back == in);
    }
  }
}

void FuzzGzip(std::string_view in) {
  auto out = wire::GzipDecompress(in, kGzipLimit);
  if (out.ok()) METALD_CHECK(out->size() <= kGzipLimit);
  auto compressed = wire::GzipCompress(in);
  METALD_CHECK(compressed.ok());
  auto back = wire::GzipDecompress(*compressed, in.size() + 1);
  METALD_CHECK(back.ok() && *back == in);
  auto identity = wire::Decompress(wire::Compression::kIdentity, in, kGzipLimit);
  METALD_CHECK(identity.ok() == (in.size() <= kGzipLimit));
}

void FuzzTimeouts(std::string_view in) {
  auto connect = wire::ParseConnectTimeout(in);
  if (connect.ok()) METALD_CHECK(connect->count() >= 0);
  auto grpc = wire::ParseGrpcTimeout(in);
  if (grpc.ok()) {
    METALD_CHECK(grpc->count() >= 0);
    auto again = wire::ParseGrpcTimeout(wire::FormatGrpcTimeout(*grpc));
    METALD_CHECK(again.ok());
  }
}

void FuzzPercent(std::string_view in) {
  std::string decoded = wire::PercentDecodeGrpcMessage(in);
  METALD_CHECK(decoded.size() <= in.size());
  std::string encoded = wire::PercentEncodeGrpcMessage(in);
  METALD_CHECK(wire::IsValidHeaderValue(encoded));
  METALD_CHECK(wire::PercentDecodeGrpcMessage(encoded) == in);
}

void FuzzHeaders(std::string_view in) {
  auto ct = wire::ClassifyContentType(in);
  if (ct) {
    auto again =
        wire::ClassifyContentType(wire::ContentTypeFor(ct->protocol, ct->codec, ct->enveloped));
    METALD_CHECK(again && again->protocol == ct->protocol && again->codec == ct->codec &&
                 again->enveloped == ct->enveloped);
  }
  if (auto c = wire::ParseCompression(in)) {
    METALD_CHECK(wire::ParseCompression(wire::CompressionName(*c)) == c);
  }
  for (auto request : {wire::Compression::kIdentity, wire::Compression::kGzip}) {
    (void)wire::NegotiateCompression(request, in);
  }
  if (auto codec = wire::ParseCodecName(in)) {
    METALD_CHECK(wire::ParseCodecName(wire::CodecName(*codec)) == codec);
  }
  if (auto code = wire::ParseGrpcStatus(in)) {
    METALD_CHECK(static_cast<int>(*code) >= 0 && static_cast<int>(*code) <= 16);
  }
  if (wire::IsValidHeaderName(in)) METALD_CHECK(metald::rpc::AsciiLower(in) == in);
  (void)wire::IsValidHeaderValue(in);
  (void)wire::IsReservedHeader(in);
}

void FuzzMessage(std::string_view in) {
  for (Codec codec : {Codec::kProto, Codec::kJson}) {
    google::protobuf::StringValue msg;
    if (!wire::ParseMessage(codec, in, &msg).ok()) continue;
    auto bytes = wire::SerializeMessage(codec, msg);
    // proto3 strings must be UTF-8; the binary parser may accept what the JSON printer refuses.
    if (!bytes.ok()) continue;
    google::protobuf::StringValue back;
    METALD_CHECK(wire::ParseMessage(codec, *bytes, &back).ok());
    METALD_CHECK(back.value() == msg.value());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  metald::rpc::fuzz::SilenceProtobufLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 7) {
    case 0:
      FuzzTrailers(in);
      break;
    case 1:
      FuzzBase64(in);
      break;
    case 2:
      FuzzGzip(in);
      break;
    case 3:
      FuzzTimeouts(in);
      break;
    case 4:
      FuzzPercent(in);
      break;
    case 5:
      FuzzHeaders(in);
      break;
    default:
      FuzzMessage(in);
      break;
  }
  return 0;
}

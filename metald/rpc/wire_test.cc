#include "metald/rpc/wire.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/wrappers.pb.h>
#include <gtest/gtest.h>

#include <random>

namespace metald::rpc::wire {
namespace {

using base::StatusCode;

TEST(Envelope, EncodeLayout) {
  EXPECT_EQ(EncodeEnvelope(kFlagEndStream, "{}"), std::string("\x02\x00\x00\x00\x02{}", 7));
  std::string big(300, 'x');
  std::string e = EncodeEnvelope(kFlagCompressed, big);
  ASSERT_EQ(e.size(), 305u);
  EXPECT_EQ(e.substr(0, 5), std::string("\x01\x00\x00\x01\x2c", 5));
}

TEST(Envelope, DecodeAnySplit) {
  std::string body = EncodeEnvelope(0, "hello") + EncodeEnvelope(0, "") +
                     EncodeEnvelope(kFlagCompressed, std::string(70000, 'z'));
  for (size_t chunk : {1u, 2u, 3u, 5u, 7u, 4096u, 1000000u}) {
    EnvelopeDecoder d(1 << 20);
    std::vector<Envelope> out;
    for (size_t i = 0; i < body.size(); i += chunk) {
      ASSERT_TRUE(d.Feed(std::string_view(body).substr(i, chunk), &out).ok());
    }
    ASSERT_TRUE(d.Finish().ok());
    ASSERT_EQ(out.size(), 3u) << chunk;
    EXPECT_EQ(out[0].payload, "hello");
    EXPECT_EQ(out[0].flags, 0);
    EXPECT_EQ(out[1].payload, "");
    EXPECT_EQ(out[2].flags, kFlagCompressed);
    EXPECT_EQ(out[2].payload.size(), 70000u);
  }
}

TEST(Envelope, Truncated) {
  std::string body = EncodeEnvelope(0, "hello");
  for (size_t n = 1; n < body.size(); ++n) {
    auto r = DecodeEnvelopes(std::string_view(body).substr(0, n), 100);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
  auto empty = DecodeEnvelopes("", 100);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(Envelope, TooLargeIsRefusedFromHeader) {
  EnvelopeDecoder d(10);
  std::vector<Envelope> out;
  // Only the header of an 11-byte payload: refused without waiting for the payload.
  base::Status st = d.Feed(std::string("\x00\x00\x00\x00\x0b", 5), &out);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  // Sticky.
  EXPECT_EQ(d.Feed(EncodeEnvelope(0, "a"), &out).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(d.Finish().code(), StatusCode::kResourceExhausted);
  // A 4 GiB length claim must not allocate.
  auto r = DecodeEnvelopes(std::string("\x00\xff\xff\xff\xff", 5), 4 << 20);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
}

TEST(ConnectError, EncodeExactKeys) {
  EXPECT_EQ(EncodeConnectError(base::UnavailableError("overloaded")),
            R"({"code":"unavailable","message":"overloaded"})");
  EXPECT_EQ(EncodeConnectError(base::Status(StatusCode::kCancelled, "")), R"({"code":"canceled"})");
  ErrorDetail d{"type.googleapis.com/google.rpc.RetryInfo", std::string("\x0a\x02\x08\x3c", 4),
                R"({"retryDelay":"60s"})"};
  EXPECT_EQ(EncodeConnectError(base::UnavailableError("x"), {d}),
            R"({"code":"unavailable","message":"x","details":[{"type":"google.rpc.RetryInfo",)"
            R"("value":"CgIIPA","debug":{"retryDelay":"60s"}}]})");
}

TEST(ConnectError, UnicodeRoundTrip) {
  const std::string msg = "\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\n";
  std::string json = EncodeConnectError(base::InvalidArgumentError(msg));
  auto e = DecodeConnectError(json);
  ASSERT_TRUE(e.ok()) << json;
  EXPECT_EQ(e->code, StatusCode::kInvalidArgument);
  EXPECT_EQ(e->message, msg);
  // Escaped non-BMP (surrogate pair) decodes to the same bytes.
  auto e2 = DecodeConnectError(R"({"code":"internal","message":"\ud83d\ude08 \u263a"})");
  ASSERT_TRUE(e2.ok());
  EXPECT_EQ(e2->message, "😈 ☺");
}

TEST(ConnectError, InvalidUtf8IsReplacedNotThrown) {
  std::string json = EncodeConnectError(base::InternalError(std::string("bad \xff\xfe byte")));
  auto e = DecodeConnectError(json);
  ASSERT_TRUE(e.ok()) << json;
  EXPECT_EQ(e->message, "bad \xEF\xBF\xBD\xEF\xBF\xBD byte");
}

TEST(ConnectError, DecodeDetailsAndUnknownCode) {
  auto e = DecodeConnectError(
      R"({"code":"bogus","details":[{"type":"google.rpc.RetryInfo","value":"CgIIPA"}]})");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->code, StatusCode::kUnknown);
  ASSERT_EQ(e->details.size(), 1u);
  EXPECT_EQ(e->details[0].value, std::string("\x0a\x02\x08\x3c", 4));
  EXPECT_EQ(e->details[0].type, "google.rpc.RetryInfo");
}

TEST(ConnectError, DecodeMalformed) {
  for (std::string_view bad :
       {"", "{", "null", "[]", "{}", R"({"code":null})", R"({"code":3})",
        R"({"code":"internal","message":5})", R"({"code":"internal","details":{}})",
        R"({"code":"internal","details":[{"type":"x"}]})",
        R"({"code":"internal","details":[{"type":"x","value":"!!"}]})", "\xff\xfe",
        R"({"code":"internal"} trailing)"}) {
    auto e = DecodeConnectError(bad);
    EXPECT_FALSE(e.ok()) << bad;
    if (!e.ok()) {
      EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument) << bad;
    }
  }
}

TEST(EndStream, EncodeDecode) {
  EXPECT_EQ(EncodeEndStream(base::OkStatus(), {}), "{}");
  Metadata md{{"acme-cost", "237"}, {"x-bin-thing-bin", "AAEC"}, {"acme-cost", "1"}};
  std::string json = EncodeEndStream(base::UnavailableError("overloaded"), md);
  EXPECT_EQ(json, R"({"error":{"code":"unavailable","message":"overloaded"},)"
                  R"("metadata":{"acme-cost":["237","1"],"x-bin-thing-bin":["AAEC"]}})");
  auto es = DecodeEndStream(json);
  ASSERT_TRUE(es.ok());
  ASSERT_TRUE(es->error.has_value());
  EXPECT_EQ(es->error->code, StatusCode::kUnavailable);
  EXPECT_EQ(es->metadata.GetAll("acme-cost").size(), 2u);
  auto ok = DecodeEndStream("{}");
  ASSERT_TRUE(ok.ok());
  EXPECT_FALSE(ok->error.has_value());
  for (std::string_view bad : {R"({"error":null})", R"({"error":{}})", R"({"metadata":{"a":"b"}})",
                               R"({"metadata":{"a":[1]}})", "[]", "x"}) {
    EXPECT_FALSE(DecodeEndStream(bad).ok()) << bad;
  }
}

TEST(Codes, HttpStatusTable) {
  const std::vector<std::pair<StatusCode, int>> want = {
      {StatusCode::kCancelled, 499},          {StatusCode::kUnknown, 500},
      {StatusCode::kInvalidArgument, 400},    {StatusCode::kDeadlineExceeded, 504},
      {StatusCode::kNotFound, 404},           {StatusCode::kAlreadyExists, 409},
      {StatusCode::kPermissionDenied, 403},   {StatusCode::kResourceExhausted, 429},
      {StatusCode::kFailedPrecondition, 400}, {StatusCode::kAborted, 409},
      {StatusCode::kOutOfRange, 400},         {StatusCode::kUnimplemented, 501},
      {StatusCode::kInternal, 500},           {StatusCode::kUnavailable, 503},
      {StatusCode::kDataLoss, 500},           {StatusCode::kUnauthenticated, 401}};
  for (auto [code, http] : want) EXPECT_EQ(HttpStatusForCode(code), http);
  EXPECT_EQ(HttpStatusForCode(static_cast<StatusCode>(99)), 500);
  EXPECT_EQ(CodeForHttpStatus(400), StatusCode::kInternal);
  EXPECT_EQ(CodeForHttpStatus(401), StatusCode::kUnauthenticated);
  EXPECT_EQ(CodeForHttpStatus(403), StatusCode::kPermissionDenied);
  EXPECT_EQ(CodeForHttpStatus(404), StatusCode::kUnimplemented);
  for (int s : {429, 502, 503, 504}) EXPECT_EQ(CodeForHttpStatus(s), StatusCode::kUnavailable);
  for (int s : {405, 409, 412, 413, 415, 431, 505}) {
    EXPECT_EQ(CodeForHttpStatus(s), StatusCode::kUnknown);
  }
  EXPECT_EQ(ParseGrpcStatus("0"), StatusCode::kOk);
  EXPECT_EQ(ParseGrpcStatus("16"), StatusCode::kUnauthenticated);
  EXPECT_FALSE(ParseGrpcStatus("17"));
  EXPECT_FALSE(ParseGrpcStatus(""));
  EXPECT_FALSE(ParseGrpcStatus("-1"));
}

TEST(Timeouts, Connect) {
  EXPECT_EQ(*ParseConnectTimeout("200"), std::chrono::milliseconds(200));
  EXPECT_EQ(*ParseConnectTimeout("9999999999"), std::chrono::milliseconds(9999999999));
  for (std::string_view bad : {"", "12345678901", "-1", "1.5", "abc", " 1", "1 "}) {
    EXPECT_EQ(ParseConnectTimeout(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(Timeouts, Grpc) {
  using namespace std::chrono;
  EXPECT_EQ(*ParseGrpcTimeout("1H"), hours(1));
  EXPECT_EQ(*ParseGrpcTimeout("2M"), minutes(2));
  EXPECT_EQ(*ParseGrpcTimeout("3S"), seconds(3));
  EXPECT_EQ(*ParseGrpcTimeout("4m"), milliseconds(4));
  EXPECT_EQ(*ParseGrpcTimeout("5u"), microseconds(5));
  EXPECT_EQ(*ParseGrpcTimeout("6n"), nanoseconds(6));
  EXPECT_EQ(*ParseGrpcTimeout("99999999H"), nanoseconds::max());  // saturates
  for (std::string_view bad : {"", "S", "1", "123456789S", "1s", "1X", "-1S", "1.0S"}) {
    EXPECT_FALSE(ParseGrpcTimeout(bad).ok()) << bad;
  }
  EXPECT_EQ(FormatGrpcTimeout(nanoseconds(0)), "0n");
  EXPECT_EQ(FormatGrpcTimeout(nanoseconds(-5)), "0n");
  EXPECT_EQ(FormatGrpcTimeout(milliseconds(200)), "200000u");
  EXPECT_EQ(FormatGrpcTimeout(seconds(30)), "30000000u");
  EXPECT_EQ(FormatGrpcTimeout(hours(100000)), "6000000M");
  for (auto d : {nanoseconds(1), nanoseconds(99999999), nanoseconds(123456789012)}) {
    auto back = ParseGrpcTimeout(FormatGrpcTimeout(d));
    ASSERT_TRUE(back.ok());
    EXPECT_GE(*back, d);
  }
}

TEST(GrpcMessage, PercentEncoding) {
  EXPECT_EQ(PercentEncodeGrpcMessage("a b%c\n☺"), "a b%25c%0A%E2%98%BA");
  EXPECT_EQ(PercentDecodeGrpcMessage("a b%25c%0A%E2%98%BA"), "a b%c\n☺");
  // Lenient on malformed escapes.
  EXPECT_EQ(PercentDecodeGrpcMessage("100%"), "100%");
  EXPECT_EQ(PercentDecodeGrpcMessage("%zz%4"), "%zz%4");
  EXPECT_EQ(PercentDecodeGrpcMessage("%e2%98%ba"), "☺");
}

TEST(Base64, StdAndUrl) {
  const std::string data("\xfb\xff\xfe\x00\x01", 5);
  EXPECT_EQ(Base64Encode(data), "+//+AAE");
  EXPECT_EQ(Base64Encode(data, Base64Alphabet::kStd, true), "+//+AAE=");
  EXPECT_EQ(Base64Encode(data, Base64Alphabet::kUrl), "-__-AAE");
  EXPECT_EQ(*Base64Decode("+//+AAE"), data);
  EXPECT_EQ(*Base64Decode("+//+AAE="), data);
  EXPECT_EQ(*Base64Decode("-__-AAE", Base64Alphabet::kUrl), data);
  EXPECT_EQ(*Base64Decode("-__-AAE=", Base64Alphabet::kUrl), data);
  EXPECT_EQ(*Base64Decode(""), "");
  EXPECT_EQ(*Base64Decode("QQ=="), "A");
  EXPECT_EQ(*Base64Decode("QQ"), "A");
  for (std::string_view bad : {"Q", "QQ=", "Q===", "QQ==QQ==", "-__-", "QQ QQ", "QUJD=", "=QQQ"}) {
    EXPECT_FALSE(Base64Decode(bad).ok()) << bad;
  }
  EXPECT_FALSE(Base64Decode("+//+", Base64Alphabet::kUrl).ok());
  std::mt19937 rng(7);
  for (int n = 0; n < 64; ++n) {
    std::string s(static_cast<size_t>(n), '\0');
    for (char& c : s) c = static_cast<char>(rng());
    for (auto a : {Base64Alphabet::kStd, Base64Alphabet::kUrl}) {
      for (bool pad : {false, true}) EXPECT_EQ(*Base64Decode(Base64Encode(s, a, pad), a), s);
    }
  }
}

TEST(Compression, Negotiate) {
  using C = Compression;
  EXPECT_EQ(NegotiateCompression(C::kGzip, "identity"), C::kGzip);
  EXPECT_EQ(NegotiateCompression(C::kIdentity, std::nullopt), C::kIdentity);
  EXPECT_EQ(NegotiateCompression(C::kIdentity, "br, gzip"), C::kGzip);
  EXPECT_EQ(NegotiateCompression(C::kIdentity, "identity, gzip"), C::kGzip);
  EXPECT_EQ(NegotiateCompression(C::kIdentity, "gzip;q=0, br"), C::kIdentity);
  EXPECT_EQ(NegotiateCompression(C::kIdentity, " GZIP ;q=0.5"), C::kGzip);
  EXPECT_EQ(NegotiateCompression(C::kIdentity, ""), C::kIdentity);
  EXPECT_EQ(ParseCompression(""), C::kIdentity);
  EXPECT_EQ(ParseCompression("gzip"), C::kGzip);
  EXPECT_FALSE(ParseCompression("br"));
  base::Status st = UnsupportedCompressionError("br");
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented);
  EXPECT_NE(st.message().find("gzip"), std::string::npos);
}

TEST(Compression, GzipRoundTripAndLimits) {
  std::string data(100000, 'a');
  auto z = GzipCompress(data);
  ASSERT_TRUE(z.ok());
  EXPECT_LT(z->size(), 1000u);
  EXPECT_EQ(*GzipDecompress(*z, data.size()), data);
  // Bomb: limit one byte short.
  auto bomb = GzipDecompress(*z, data.size() - 1);
  EXPECT_EQ(bomb.status().code(), StatusCode::kResourceExhausted);
  // Concatenated members.
  auto z2 = GzipCompress("xyz");
  EXPECT_EQ(*GzipDecompress(*z + *z2, 1 << 20), data + "xyz");
  // Empty payload compresses to a valid stream.
  EXPECT_EQ(*GzipDecompress(*GzipCompress(""), 10), "");
  // Corrupt, truncated, trailing garbage, empty.
  EXPECT_EQ(GzipDecompress("not gzip at all", 100).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(GzipDecompress(z->substr(0, z->size() / 2), 1 << 20).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(GzipDecompress(*z + "junk", 1 << 20).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(GzipDecompress("", 100).status().code(), StatusCode::kInvalidArgument);
  std::string flipped = *z;
  flipped[flipped.size() - 6] ^= 0x55;  // CRC
  EXPECT_FALSE(GzipDecompress(flipped, 1 << 20).ok());
  EXPECT_EQ(Decompress(Compression::kIdentity, "abcd", 3).status().code(),
            StatusCode::kResourceExhausted);
}

TEST(ContentType, Classify) {
  struct Case {
    std::string_view ct;
    Protocol protocol;
    Codec codec;
    bool enveloped;
  };
  for (const Case& c : std::vector<Case>{
           {"application/json", Protocol::kConnect, Codec::kJson, false},
           {"Application/JSON; charset=utf-8", Protocol::kConnect, Codec::kJson, false},
           {"application/proto", Protocol::kConnect, Codec::kProto, false},
           {"application/connect+proto", Protocol::kConnect, Codec::kProto, true},
           {"application/connect+json;charset=utf-8", Protocol::kConnect, Codec::kJson, true},
           {"application/grpc", Protocol::kGrpc, Codec::kProto, true},
           {"application/grpc+proto", Protocol::kGrpc, Codec::kProto, true},
           {"application/grpc+json", Protocol::kGrpc, Codec::kJson, true},
           {"application/grpc-web", Protocol::kGrpcWeb, Codec::kProto, true},
           {"application/grpc-web+proto", Protocol::kGrpcWeb, Codec::kProto, true},
           {"application/grpc-web+json", Protocol::kGrpcWeb, Codec::kJson, true}}) {
    auto info = ClassifyContentType(c.ct);
    ASSERT_TRUE(info.has_value()) << c.ct;
    EXPECT_EQ(info->protocol, c.protocol) << c.ct;
    EXPECT_EQ(info->codec, c.codec) << c.ct;
    EXPECT_EQ(info->enveloped, c.enveloped) << c.ct;
  }
  EXPECT_EQ(ClassifyContentType("application/grpc+proto; foo=bar")->media_type,
            "application/grpc+proto");
  for (std::string_view bad :
       {"", "image/jpeg", "application/foo", "application/connect", "application/connect+xml",
        "application/grpc-web-text", "application/grpc-web-text+proto", "application/grpcx",
        "application/grpc+thrift", "application/jsonx"}) {
    EXPECT_FALSE(ClassifyContentType(bad).has_value()) << bad;
  }
  EXPECT_EQ(ContentTypeFor(Protocol::kConnect, Codec::kJson, true), "application/connect+json");
  EXPECT_EQ(ContentTypeFor(Protocol::kConnect, Codec::kProto, false), "application/proto");
}

TEST(Headers, Validation) {
  EXPECT_TRUE(IsValidHeaderName("x-custom_1.a"));
  EXPECT_FALSE(IsValidHeaderName("X-Custom"));
  EXPECT_FALSE(IsValidHeaderName(""));
  EXPECT_FALSE(IsValidHeaderName("a b"));
  EXPECT_TRUE(IsValidHeaderValue("hello world ~"));
  EXPECT_TRUE(IsValidHeaderValue(""));
  EXPECT_FALSE(IsValidHeaderValue("a\r\nb"));
  EXPECT_FALSE(IsValidHeaderValue("\x7f"));
  for (std::string_view r : {"Content-Type", "content-length", "grpc-status", "Connect-Timeout-Ms",
                             "trailer-x", "te", ":status", "transfer-encoding"}) {
    EXPECT_TRUE(IsReservedHeader(r)) << r;
  }
  EXPECT_FALSE(IsReservedHeader("x-request-id"));
  EXPECT_FALSE(IsReservedHeader("authorization"));
}

TEST(GrpcWebTrailers, EncodeDecode) {
  Metadata md{{"grpc-status", "0"},
              {"grpc-message", ""},
              {"X-Custom-Trailer", "bing"},
              {"bad name", "x"},
              {"x-bad-value", "a\nb"}};
  std::string block = EncodeGrpcWebTrailers(md);
  EXPECT_EQ(block, "grpc-status: 0\r\ngrpc-message: \r\nx-custom-trailer: bing\r\n");
  auto back = DecodeGrpcWebTrailers(block);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->Get("grpc-status"), "0");
  EXPECT_EQ(back->Get("x-custom-trailer"), "bing");
  EXPECT_EQ(back->Get("grpc-message"), "");
  EXPECT_TRUE(DecodeGrpcWebTrailers("")->empty());
  EXPECT_EQ(DecodeGrpcWebTrailers("Grpc-Status: 3\r\n")->Get("grpc-status"), "3");
  for (std::string_view bad :
       {"grpc-status: 0", "grpc-status: 0\n", "grpc-status: 0\r\n\r\n", "\r\n", "a: b\r\n c\r\n",
        "nocolon\r\n", "a b: c\r\n", ": empty\r\n", "a: b\rc\r\n"}) {
    EXPECT_FALSE(DecodeGrpcWebTrailers(bad).ok()) << bad;
  }
}

TEST(Query, Parse) {
  auto q = ParseConnectGetQuery(
      "message=%7B%22name%22%3A%22a+b%22%7D&unknown=1&encoding=json&connect=v1&message=ignored");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->message, R"({"name":"a b"})");
  EXPECT_EQ(q->encoding, "json");
  EXPECT_EQ(q->connect, "v1");
  EXPECT_FALSE(q->base64);
  EXPECT_FALSE(q->compression);
  auto q2 = ParseConnectGetQuery("base64=1&compression=gzip&encoding=proto&message=AB-_");
  ASSERT_TRUE(q2.ok());
  EXPECT_TRUE(q2->base64);
  EXPECT_EQ(q2->compression, "gzip");
  EXPECT_EQ(q2->message, "AB-_");
  EXPECT_FALSE(ParseConnectGetQuery("base64=true")->base64);
  EXPECT_TRUE(ParseConnectGetQuery("&&message&")->message.has_value());
  EXPECT_EQ(*ParseConnectGetQuery("&&message&")->message, "");
  EXPECT_FALSE(ParseConnectGetQuery("message=%zz").ok());
  EXPECT_FALSE(ParseConnectGetQuery("message=%4").ok());
  EXPECT_EQ(*QueryUnescape("%2B+%20"), "+  ");
}

TEST(Messages, ProtoAndJson) {
  google::protobuf::StringValue in;
  in.set_value("héllo");
  auto bin = SerializeMessage(Codec::kProto, in);
  ASSERT_TRUE(bin.ok());
  google::protobuf::StringValue out;
  ASSERT_TRUE(ParseMessage(Codec::kProto, *bin, &out).ok());
  EXPECT_EQ(out.value(), "héllo");
  auto json = SerializeMessage(Codec::kJson, in);
  ASSERT_TRUE(json.ok());
  EXPECT_EQ(*json, "\"héllo\"");
  ASSERT_TRUE(ParseMessage(Codec::kJson, *json, &out).ok());
  EXPECT_EQ(out.value(), "héllo");

  // lowerCamelCase names, unknown fields ignored.
  google::protobuf::Struct s;
  ASSERT_TRUE(ParseMessage(Codec::kJson, R"({"fooBar": 1, "x": [true]})", &s).ok());
  EXPECT_EQ(s.fields().at("fooBar").number_value(), 1);
  google::protobuf::Int64Value i;
  ASSERT_TRUE(ParseMessage(Codec::kJson, R"("42")", &i).ok());
  EXPECT_EQ(i.value(), 42);

  base::Status bad = ParseMessage(Codec::kProto, "\xff\xff\xff", &out);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("google.protobuf.StringValue"), std::string::npos);
  base::Status bad_json = ParseMessage(Codec::kJson, "{not json", &s);
  EXPECT_EQ(bad_json.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_json.message().find("google.protobuf.Struct"), std::string::npos);
  EXPECT_EQ(ParseMessage(Codec::kJson, "", &s).code(), StatusCode::kInvalidArgument);
  // Empty proto is a valid empty message.
  EXPECT_TRUE(ParseMessage(Codec::kProto, "", &out).ok());
  EXPECT_EQ(out.value(), "");
}

// Robustness: random bytes never crash the decoders.
TEST(Robustness, RandomInputs) {
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    (void)DecodeEnvelopes(s, 64);
    (void)DecodeConnectError(s);
    (void)DecodeEndStream(s);
    (void)Base64Decode(s);
    (void)GzipDecompress(s, 1024);
    (void)DecodeGrpcWebTrailers(s);
    (void)ParseConnectGetQuery(s);
    (void)ParseGrpcTimeout(s);
    (void)ParseConnectTimeout(s);
    (void)PercentDecodeGrpcMessage(s);
    (void)ClassifyContentType(s);
  }
  // Deeply nested JSON must not overflow the stack.
  std::string deep(100000, '[');
  EXPECT_FALSE(DecodeConnectError(deep).ok());
  std::string deep_ok = std::string(20000, '[') + std::string(20000, ']');
  EXPECT_FALSE(DecodeConnectError(deep_ok).ok());
}

}  // namespace
}  // namespace metald::rpc::wire

// Regression cases found by fuzz_rpc_http2 (metald/rpc/fuzz). Each feeds the HTTP/2 session the
// exact bytes the fuzzer found, the way a socket may deliver them.

#include <google/protobuf/wrappers.pb.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "metald/rpc/internal/engine.h"
#include "metald/rpc/internal/session.h"
#include "metald/rpc/router.h"
#include "metald/rpc/testing/test_methods.h"

namespace metald::rpc::internal {
namespace {

using google::protobuf::StringValue;

class Host : public SessionHost {
 public:
  void WakeWriter() override {}
  bool OnIoThread() const override { return std::this_thread::get_id() == owner_; }
  const std::string& peer() const override { return peer_; }
  bool tls() const override { return false; }

 private:
  const std::thread::id owner_ = std::this_thread::get_id();
  const std::string peer_ = "127.0.0.1:5000";
};

std::string Frame(uint8_t type, uint8_t flags, uint32_t stream, std::string_view payload) {
  std::string f;
  const uint32_t n = static_cast<uint32_t>(payload.size());
  f.push_back(static_cast<char>(n >> 16));
  f.push_back(static_cast<char>(n >> 8));
  f.push_back(static_cast<char>(n));
  f.push_back(static_cast<char>(type));
  f.push_back(static_cast<char>(flags));
  for (int shift = 24; shift >= 0; shift -= 8) f.push_back(static_cast<char>(stream >> shift));
  f.append(payload);
  return f;
}

// HPACK literal header field without indexing, new name, no Huffman (lengths < 127).
std::string Literal(std::string_view name, std::string_view value) {
  std::string out(1, '\0');
  out.push_back(static_cast<char>(name.size()));
  out.append(name);
  out.push_back(static_cast<char>(value.size()));
  out.append(value);
  return out;
}

// A gRPC unary call whose header block is split over HEADERS + one CONTINUATION frame.
std::string GrpcRequestWithContinuation() {
  std::string block = Literal(":method", "POST") + Literal(":scheme", "http") +
                      Literal(":path", "/test.Echo/Say") + Literal(":authority", "x") +
                      Literal("content-type", "application/grpc");
  StringValue req;
  req.set_value("world");
  std::string msg = req.SerializeAsString();
  std::string envelope(5, '\0');
  envelope[4] = static_cast<char>(msg.size());
  envelope += msg;
  constexpr uint8_t kData = 0x0, kHeaders = 0x1, kSettings = 0x4, kContinuation = 0x9;
  constexpr uint8_t kEndStream = 0x1, kEndHeaders = 0x4;
  return std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + Frame(kSettings, 0, 0, "") +
         Frame(kHeaders, 0, 1, block.substr(0, 20)) +
         Frame(kContinuation, kEndHeaders, 1, block.substr(20)) +
         Frame(kData, kEndStream, 1, envelope);
}

class Http2FuzzRegressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto router = std::make_shared<Router>();
    // Nonblocking: answered inline, no waiting in the test.
    ASSERT_TRUE(router->AddMethod(testing::SayMethod(/*nonblocking=*/true)).ok());
    engine_ = std::make_unique<Engine>(router, EngineOptions{4u << 20, 2});
  }

  // Feeds `input` in reads of `chunk` bytes, collecting after each; returns the output, or the
  // first session error in *error.
  std::string Feed(std::string_view input, size_t chunk, base::Status* error) {
    auto session = MakeHttp2Session(&host_, engine_.get(), SessionLimits{});
    std::string out;
    for (size_t pos = 0; pos < input.size() && error->ok(); pos += chunk) {
      *error = session->OnReadable(input.substr(pos, chunk));
      session->CollectOutput(&out);
    }
    session->OnClose();
    return out;
  }

  Host host_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(Http2FuzzRegressTest, ContinuationInOneReadIsServed) {
  base::Status error;
  std::string out = Feed(GrpcRequestWithContinuation(), SIZE_MAX, &error);
  EXPECT_TRUE(error.ok()) << error.message();
  EXPECT_NE(out.find("hello world"), std::string::npos);
}

// Found by fuzz_rpc_http2 (seed corpus/http2/continuation_padded read byte by byte). Debian's
// nghttp2 1.52.0-1+deb12u3 (CVE-2024-28182 backport) counts a CONTINUATION towards its limit
// (default 8 per header block) once per mem_recv call that ends inside the CONTINUATION's
// 9-byte frame header, not once per frame: a single CONTINUATION whose header arrives in 9
// reads fails the connection with "Too many CONTINUATION frames following a HEADER frame"
// (GOAWAY INTERNAL_ERROR). Upstream counts per frame. Raising the limit on the session's
// nghttp2_option (nghttp2_option_set_max_continuations) avoids it.
TEST_F(Http2FuzzRegressTest, ContinuationReadByteByByteIsServed) {
  base::Status error;
  std::string out = Feed(GrpcRequestWithContinuation(), 1, &error);
  EXPECT_TRUE(error.ok()) << error.message();
  EXPECT_NE(out.find("hello world"), std::string::npos);
}

}  // namespace
}  // namespace metald::rpc::internal

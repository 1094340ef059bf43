// Engine tests over a fake ResponseWriter and hand-built handlers on well-known types.

#include "metald/rpc/internal/engine.h"

#include <google/protobuf/wrappers.pb.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "metald/rpc/wire.h"

namespace metald::rpc::internal {
namespace {

using base::StatusCode;
using google::protobuf::StringValue;
using namespace std::chrono_literals;

struct Recorded {
  int status = 0;
  Metadata headers;
  std::string body;
  Metadata trailers;
  int header_calls = 0;
  int data_calls = 0;
  int finish_calls = 0;
  bool headers_end_stream = false;
};

class FakeWriter : public ResponseWriter {
 public:
  void SendHeaders(int status, Metadata headers, bool end_stream) override {
    std::lock_guard lock(mu_);
    r_.status = status;
    r_.headers = std::move(headers);
    r_.header_calls++;
    r_.headers_end_stream = end_stream;
    if (end_stream) done_ = true;
    cv_.notify_all();
  }
  bool SendData(std::string bytes) override {
    std::lock_guard lock(mu_);
    r_.body += bytes;
    r_.data_calls++;
    cv_.notify_all();
    return true;
  }
  void Finish(Metadata trailers) override {
    std::lock_guard lock(mu_);
    r_.trailers = std::move(trailers);
    r_.finish_calls++;
    done_ = true;
    cv_.notify_all();
  }
  // Waits (generously, only to avoid hangs) for the response to end.
  Recorded Wait() {
    std::unique_lock lock(mu_);
    EXPECT_TRUE(cv_.wait_for(lock, 30s, [&] { return done_; })) << "no response";
    return r_;
  }
  Recorded Snapshot() {
    std::lock_guard lock(mu_);
    return r_;
  }
  // Waits until at least n data writes arrived.
  bool WaitData(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 30s, [&] { return r_.data_calls >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  Recorded r_;
};

// Records OnComplete calls; optionally demands an authorization header.
class TestInterceptor : public Interceptor {
 public:
  explicit TestInterceptor(bool require_auth) : require_auth_(require_auth) {}
  base::Status OnRequest(CallContext& ctx) override {
    on_request++;
    if (require_auth_ && !ctx.request_headers().Has("authorization")) {
      return base::UnauthenticatedError("Missing credentials");
    }
    return base::OkStatus();
  }
  void OnComplete(const CallContext&, const base::Status& status,
                  std::chrono::nanoseconds elapsed) override {
    std::lock_guard lock(mu);
    completed.push_back(status);
    EXPECT_GE(elapsed.count(), 0);
    cv.notify_all();
  }
  std::vector<base::Status> WaitCompleted(size_t n) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, 30s, [&] { return completed.size() >= n; });
    return completed;
  }

  std::atomic<int> on_request{0};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<base::Status> completed;

 private:
  bool require_auth_;
};

std::string Proto(std::string_view v) {
  StringValue m;
  m.set_value(std::string(v));
  return m.SerializeAsString();
}

StringValue ParseProto(std::string_view bytes) {
  StringValue m;
  EXPECT_TRUE(m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
  return m;
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { router_ = std::make_shared<Router>(); }

  // Builds the engine after the test added its interceptors.
  Engine& engine(size_t max_message_bytes = 4u << 20) {
    if (!engine_) {
      AddMethods();
      for (const auto& [path, limit] : method_limits_) {
        EXPECT_TRUE(router_->SetMaxConcurrency(path, limit).ok()) << path;
      }
      engine_ = std::make_unique<Engine>(router_,
                                         EngineOptions{max_message_bytes, 4, max_pending_calls_});
    }
    return *engine_;
  }

  void AddMethods() {
    // Echo: echoes the value; "error:<n>" fails with code n; sets metadata, including forged
    // protocol headers that must not reach the wire.
    MethodHandler echo;
    echo.desc = {"test.v1.Echo", "Echo", "/test.v1.Echo/Echo", MethodKind::kUnary, false, false};
    echo.request_prototype = &StringValue::default_instance();
    echo.response_prototype = &StringValue::default_instance();
    echo.unary = [](CallContext& ctx, const google::protobuf::Message& req,
                    google::protobuf::Message& resp) -> base::Status {
      const auto& in = static_cast<const StringValue&>(req);
      ctx.response_headers().Add("x-resp", "1");
      ctx.response_headers().Add("content-type", "text/evil");
      ctx.response_headers().Add("grpc-status", "0");
      ctx.response_trailers().Add("x-trailer", "t");
      if (in.value().starts_with("error:")) {
        int code = std::stoi(in.value().substr(6));
        return base::Status(static_cast<StatusCode>(code), "failed: " + in.value());
      }
      static_cast<StringValue&>(resp).set_value(in.value());
      return base::OkStatus();
    };
    ASSERT_TRUE(router_->AddMethod(echo).ok());

    MethodHandler get = echo;
    get.desc = {"test.v1.Echo", "Get", "/test.v1.Echo/Get", MethodKind::kUnary, true, true};
    ASSERT_TRUE(router_->AddMethod(get).ok());

    // Sleep: ignores cancellation entirely; returns only when the test opens the gate.
    MethodHandler sleep = echo;
    sleep.desc = {"test.v1.Echo", "Sleep", "/test.v1.Echo/Sleep", MethodKind::kUnary, false, false};
    sleep.unary = [this](CallContext& ctx, const google::protobuf::Message&,
                         google::protobuf::Message& resp) -> base::Status {
      observed_deadline_ = ctx.deadline().has_value();
      {
        std::unique_lock lock(gate_mu_);
        gate_cv_.wait_for(lock, 60s, [&] { return gate_open_; });
      }
      static_cast<StringValue&>(resp).set_value("late");
      sleep_done_ = true;
      return base::OkStatus();
    };
    ASSERT_TRUE(router_->AddMethod(sleep).ok());

    // Wait: returns when cancelled.
    MethodHandler wait = echo;
    wait.desc = {"test.v1.Echo", "Wait", "/test.v1.Echo/Wait", MethodKind::kUnary, false, false};
    wait.unary = [](CallContext& ctx, const google::protobuf::Message&,
                    google::protobuf::Message&) -> base::Status {
      ctx.cancel_token().WaitFor(30s);
      return base::InternalError("should not be seen");
    };
    ASSERT_TRUE(router_->AddMethod(wait).ok());

    // Stream: value "n" writes n messages "m0".."m<n-1>"; "fail" writes one then fails;
    // "big" writes one 4 KiB message.
    MethodHandler stream;
    stream.desc = {"test.v1.Echo", "Stream", "/test.v1.Echo/Stream", MethodKind::kServerStreaming,
                   false,          false};
    stream.request_prototype = &StringValue::default_instance();
    stream.response_prototype = &StringValue::default_instance();
    stream.stream = [](CallContext& ctx, const google::protobuf::Message& req,
                       StreamWriter& writer) -> base::Status {
      const auto& in = static_cast<const StringValue&>(req);
      ctx.response_headers().Add("x-resp", "1");
      ctx.response_trailers().Add("x-trailer", "t");
      StringValue m;
      if (in.value() == "fail") {
        m.set_value("m0");
        RETURN_IF_ERROR(writer.Write(m));
        return base::UnavailableError("overloaded ☺");
      }
      if (in.value() == "big") {
        m.set_value(std::string(4096, 'b'));
        return writer.Write(m);
      }
      int n = std::stoi(in.value());
      for (int i = 0; i < n; ++i) {
        m.set_value("m" + std::to_string(i));
        RETURN_IF_ERROR(writer.Write(m));
      }
      return base::OkStatus();
    };
    ASSERT_TRUE(router_->AddMethod(stream).ok());

    ASSERT_TRUE(router_
                    ->AddHttpRoute("/healthz",
                                   [](const HttpRequest&) {
                                     HttpResponse r;
                                     r.body = "ok\n";
                                     return r;
                                   })
                    .ok());
  }

  Recorded Do(RequestHead head, std::string body, std::shared_ptr<FakeWriter>* out = nullptr,
              size_t max_message_bytes = 4u << 20) {
    auto w = std::make_shared<FakeWriter>();
    engine(max_message_bytes)
        .Handle(std::move(head), std::move(body), w, std::make_shared<CancelToken>());
    if (out) *out = w;
    return w->Wait();
  }

  static RequestHead Post(std::string path, Metadata headers) {
    RequestHead h;
    h.method = "POST";
    h.path = std::move(path);
    h.headers = std::move(headers);
    h.peer = "127.0.0.1:5000";
    return h;
  }

  static wire::ConnectError ErrorOf(const Recorded& r) {
    EXPECT_EQ(r.headers.Get("content-type"), "application/json");
    auto e = wire::DecodeConnectError(r.body);
    EXPECT_TRUE(e.ok()) << r.body;
    return e.ok() ? *e : wire::ConnectError{};
  }

  std::shared_ptr<Router> router_;
  std::unique_ptr<Engine> engine_;
  // Applied when the engine is built.
  size_t max_pending_calls_ = 4096;
  std::vector<std::pair<std::string, int>> method_limits_;
  void SetGate(bool open) {
    std::lock_guard lock(gate_mu_);
    gate_open_ = open;
    gate_cv_.notify_all();
  }
  // Never leave a handler blocked; join handlers before the members they use go away.
  void TearDown() override {
    SetGate(true);
    engine_.reset();
  }

  std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  bool gate_open_ = false;  // guarded by gate_mu_
  std::atomic<bool> sleep_done_{false};
  std::atomic<bool> observed_deadline_{false};
};

TEST_F(EngineTest, ConnectUnaryJson) {
  Recorded r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/json; charset=utf-8"},
                                              {"connect-protocol-version", "1"}}),
                  R"("héllo ☺")");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"("héllo ☺")");
  EXPECT_EQ(r.headers.GetAll("content-type").size(), 1u);
  EXPECT_EQ(r.headers.Get("content-type"), "application/json");
  EXPECT_EQ(r.headers.Get("x-resp"), "1");
  EXPECT_EQ(r.headers.Get("trailer-x-trailer"), "t");
  EXPECT_FALSE(r.headers.Has("grpc-status"));
  EXPECT_FALSE(r.headers.Has("content-encoding"));
  EXPECT_TRUE(r.trailers.empty());  // never HTTP trailers for Connect
  EXPECT_EQ(r.header_calls, 1);
  EXPECT_EQ(r.finish_calls, 1);
}

TEST_F(EngineTest, ConnectUnaryProto) {
  Recorded r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/proto"}}), Proto("x"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.Get("content-type"), "application/proto");
  EXPECT_EQ(ParseProto(r.body).value(), "x");
  // An empty body is an empty message (and is valid proto).
  Recorded empty = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/proto"}}), "");
  EXPECT_EQ(empty.status, 200);
  EXPECT_EQ(ParseProto(empty.body).value(), "");
}

TEST_F(EngineTest, ConnectUnaryErrorsForAllCodes) {
  const int want_http[17] = {0,   499, 500, 400, 504, 404, 409, 403, 429,
                             400, 409, 400, 501, 500, 503, 500, 401};
  for (int code = 1; code <= 16; ++code) {
    Recorded r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/proto"}}),
                    Proto("error:" + std::to_string(code)));
    EXPECT_EQ(r.status, want_http[code]) << code;
    wire::ConnectError e = ErrorOf(r);  // JSON even for a proto request
    EXPECT_EQ(e.code, static_cast<StatusCode>(code));
    EXPECT_EQ(e.message, "failed: error:" + std::to_string(code));
    EXPECT_EQ(r.headers.Get("trailer-x-trailer"), "t");
    EXPECT_EQ(r.headers.Get("x-resp"), "1");
    EXPECT_TRUE(r.trailers.empty());
  }
}

TEST_F(EngineTest, ConnectGet) {
  RequestHead h;
  h.method = "GET";
  h.path = "/test.v1.Echo/Get";
  h.query = "message=%22a+b%22&connect=v1&encoding=json&other=1";
  Recorded r = Do(h, "");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"("a b")");
  EXPECT_EQ(r.headers.Get("content-type"), "application/json");
  EXPECT_EQ(r.headers.Get("vary"), "Accept-Encoding");

  h.query = "encoding=proto&base64=1&message=" +
            wire::Base64Encode(Proto("hi?>"), wire::Base64Alphabet::kUrl);
  r = Do(h, "");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.Get("content-type"), "application/proto");
  EXPECT_EQ(ParseProto(r.body).value(), "hi?>");

  // Compressed and padded base64 (padding percent-encoded).
  std::string b64 = wire::Base64Encode(*wire::GzipCompress(Proto("zz")), wire::Base64Alphabet::kUrl,
                                       /*padded=*/true);
  std::string escaped;
  for (char c : b64) escaped += c == '=' ? std::string("%3D") : std::string(1, c);
  h.query = "connect=v1&base64=1&compression=gzip&encoding=proto&message=" + escaped;
  r = Do(h, "");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(ParseProto(r.body).value(), "zz");

  h.query = "encoding=json";  // no message
  r = Do(h, "");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorOf(r).code, StatusCode::kInvalidArgument);
  h.query = "encoding=xml&message=x";
  EXPECT_EQ(Do(h, "").status, 415);
  h.query = "encoding=json&message=%22x%22&connect=v2";
  EXPECT_EQ(Do(h, "").status, 400);
  h.query = "encoding=json&message=%22x%22&compression=br";
  r = Do(h, "");
  EXPECT_EQ(r.status, 501);
  EXPECT_EQ(ErrorOf(r).code, StatusCode::kUnimplemented);

  // GET is only for NO_SIDE_EFFECTS methods.
  h.path = "/test.v1.Echo/Echo";
  h.query = "encoding=json&message=%22x%22";
  r = Do(h, "");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.headers.Get("allow"), "POST");
}

TEST_F(EngineTest, RoutingErrors) {
  Recorded r = Do(Post("/test.v1.Echo/Nope", {{"content-type", "application/json"}}), "{}");
  EXPECT_EQ(r.status, 404);

  RequestHead del = Post("/test.v1.Echo/Get", {{"content-type", "application/json"}});
  del.method = "DELETE";
  r = Do(del, "");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.headers.Get("allow"), "GET, POST");

  r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "image/jpeg"}}), "x");
  EXPECT_EQ(r.status, 415);
  EXPECT_NE(r.headers.Get("accept-post")->find("application/json"), std::string_view::npos);
  r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/connect+json"}}), "");
  EXPECT_EQ(r.status, 415);
  EXPECT_EQ(r.headers.Get("accept-post")->find("connect+"), std::string_view::npos);
  r = Do(Post("/test.v1.Echo/Stream", {{"content-type", "application/json"}}), "\"1\"");
  EXPECT_EQ(r.status, 415);
  EXPECT_NE(r.headers.Get("accept-post")->find("application/connect+proto"),
            std::string_view::npos);
  r = Do(Post("/test.v1.Echo/Echo", {}), "x");
  EXPECT_EQ(r.status, 415);

  RequestHead health;
  health.method = "GET";
  health.path = "/healthz";
  r = Do(health, "");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
  health.method = "POST";
  r = Do(health, "");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.headers.Get("allow"), "GET, HEAD");
}

TEST_F(EngineTest, BadProtocolHeaders) {
  for (std::string_view t : {"abc", "12345678901", "-5", ""}) {
    Recorded r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/json"},
                                                {"connect-timeout-ms", std::string(t)}}),
                    "\"x\"");
    EXPECT_EQ(r.status, 400) << t;
    EXPECT_EQ(ErrorOf(r).code, StatusCode::kInvalidArgument) << t;
  }
  Recorded r = Do(Post("/test.v1.Echo/Echo",
                       {{"content-type", "application/json"}, {"connect-protocol-version", "2"}}),
                  "\"x\"");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorOf(r).code, StatusCode::kInvalidArgument);
  // A generous valid timeout reaches the handler as a deadline.
  r = Do(Post("/test.v1.Echo/Echo",
              {{"content-type", "application/json"}, {"connect-timeout-ms", "60000"}}),
         "\"x\"");
  EXPECT_EQ(r.status, 200);
}

TEST_F(EngineTest, DeadlineAnswersOnceEvenIfHandlerIgnoresIt) {
  auto ic = std::make_shared<TestInterceptor>(false);
  router_->AddInterceptor(ic);
  std::shared_ptr<FakeWriter> w;
  // The handler stays blocked until the gate opens, so this response can only come from the
  // deadline (Do would otherwise time out and fail).
  Recorded r = Do(Post("/test.v1.Echo/Sleep",
                       {{"content-type", "application/json"}, {"connect-timeout-ms", "100"}}),
                  "\"x\"", &w);
  EXPECT_EQ(r.status, 504);
  EXPECT_EQ(ErrorOf(r).code, StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(sleep_done_);
  SetGate(true);
  // The handler finishes later; its result is dropped and OnComplete reports the deadline.
  auto completed = ic->WaitCompleted(1);
  ASSERT_EQ(completed.size(), 1u);
  EXPECT_EQ(completed[0].code(), StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(sleep_done_);
  EXPECT_TRUE(observed_deadline_);
  Recorded after = w->Snapshot();
  EXPECT_EQ(after.header_calls, 1);
  EXPECT_EQ(after.finish_calls, 1);
  EXPECT_EQ(after.body, r.body);

  // gRPC: grpc-timeout, trailers-only deadline_exceeded.
  SetGate(false);
  r = Do(
      Post("/test.v1.Echo/Sleep", {{"content-type", "application/grpc"}, {"grpc-timeout", "50m"}}),
      wire::EncodeEnvelope(0, Proto("x")));
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.headers_end_stream);
  EXPECT_EQ(r.headers.Get("grpc-status"), "4");
  SetGate(true);
}

TEST_F(EngineTest, ZeroTimeoutIsImmediateDeadline) {
  Recorded r = Do(Post("/test.v1.Echo/Echo",
                       {{"content-type", "application/json"}, {"connect-timeout-ms", "0"}}),
                  "\"x\"");
  EXPECT_EQ(r.status, 504);
}

TEST_F(EngineTest, CancelAllAnswersWithReason) {
  auto w = std::make_shared<FakeWriter>();
  engine().Handle(Post("/test.v1.Echo/Wait", {{"content-type", "application/json"}}), "\"x\"", w,
                  std::make_shared<CancelToken>());
  // CancelAll may run before the call is registered; repeat until the response comes.
  for (int i = 0; i < 3000 && w->Snapshot().header_calls == 0; ++i) {
    engine().CancelAll(base::UnavailableError("Server is shutting down"));
    std::this_thread::sleep_for(10ms);
  }
  Recorded r = w->Wait();
  EXPECT_EQ(r.status, 503);
  wire::ConnectError e = ErrorOf(r);
  EXPECT_EQ(e.code, StatusCode::kUnavailable);
  EXPECT_EQ(e.message, "Server is shutting down");
}

TEST_F(EngineTest, GzipRequestAndResponse) {
  const std::string big(5000, 'q');
  auto gz = wire::GzipCompress("\"" + big + "\"");
  ASSERT_TRUE(gz.ok());
  Recorded r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/json"},
                                              {"content-encoding", "gzip"},
                                              {"accept-encoding", "gzip"}}),
                  *gz);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.Get("content-encoding"), "gzip");
  auto plain = wire::GzipDecompress(r.body, 1 << 20);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(*plain, "\"" + big + "\"");

  // Small responses stay uncompressed; Accept-Encoding alone selects gzip for large ones.
  r = Do(Post("/test.v1.Echo/Echo",
              {{"content-type", "application/json"}, {"accept-encoding", "gzip"}}),
         "\"small\"");
  EXPECT_FALSE(r.headers.Has("content-encoding"));
  EXPECT_EQ(r.body, "\"small\"");
  r = Do(Post("/test.v1.Echo/Echo",
              {{"content-type", "application/json"}, {"accept-encoding", "br, gzip"}}),
         "\"" + big + "\"");
  EXPECT_EQ(r.headers.Get("content-encoding"), "gzip");

  // Unknown encoding.
  r = Do(Post("/test.v1.Echo/Echo",
              {{"content-type", "application/json"}, {"content-encoding", "br"}}),
         "xx");
  EXPECT_EQ(r.status, 501);
  wire::ConnectError e = ErrorOf(r);
  EXPECT_EQ(e.code, StatusCode::kUnimplemented);
  EXPECT_NE(e.message.find("gzip"), std::string::npos);

  // Empty body with gzip is an empty message, never decompressed.
  r = Do(Post("/test.v1.Echo/Echo",
              {{"content-type", "application/proto"}, {"content-encoding", "gzip"}}),
         "");
  EXPECT_EQ(r.status, 200);

  // Corrupt gzip.
  r = Do(Post("/test.v1.Echo/Echo",
              {{"content-type", "application/json"}, {"content-encoding", "gzip"}}),
         "not gzip");
  EXPECT_EQ(r.status, 400);
}

TEST_F(EngineTest, OversizedDecompressedMessage) {
  auto gz = wire::GzipCompress("\"" + std::string(10000, 'a') + "\"");
  ASSERT_TRUE(gz.ok());
  ASSERT_LT(gz->size(), 1024u);
  Recorded r = Do(Post("/test.v1.Echo/Echo",
                       {{"content-type", "application/json"}, {"content-encoding", "gzip"}}),
                  *gz, nullptr, /*max_message_bytes=*/1024);
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(ErrorOf(r).code, StatusCode::kResourceExhausted);
  // Uncompressed too large.
  r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/json"}}),
         "\"" + std::string(2000, 'a') + "\"");
  EXPECT_EQ(r.status, 429);
  // Streaming envelope over the limit.
  r = Do(Post("/test.v1.Echo/Stream", {{"content-type", "application/connect+proto"}}),
         wire::EncodeEnvelope(0, Proto(std::string(2000, 'a'))));
  EXPECT_EQ(r.status, 200);
  auto frames = wire::DecodeEnvelopes(r.body, 1 << 20);
  ASSERT_TRUE(frames.ok());
  ASSERT_EQ(frames->size(), 1u);
  auto es = wire::DecodeEndStream(frames->back().payload);
  ASSERT_TRUE(es.ok() && es->error);
  EXPECT_EQ(es->error->code, StatusCode::kResourceExhausted);
}

TEST_F(EngineTest, MalformedBodies) {
  Recorded r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/json"}}), "{nope");
  EXPECT_EQ(r.status, 400);
  wire::ConnectError e = ErrorOf(r);
  EXPECT_EQ(e.code, StatusCode::kInvalidArgument);
  EXPECT_NE(e.message.find("google.protobuf.StringValue"), std::string::npos);
  r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/json"}}), "");
  EXPECT_EQ(r.status, 400);
  r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/proto"}}), "\xff\xff\xff");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorOf(r).code, StatusCode::kInvalidArgument);
}

class StreamResult {
 public:
  explicit StreamResult(const Recorded& r) {
    auto frames = wire::DecodeEnvelopes(r.body, 1 << 20);
    EXPECT_TRUE(frames.ok());
    if (!frames.ok() || frames->empty()) return;
    for (size_t i = 0; i + 1 < frames->size(); ++i) messages.push_back((*frames)[i]);
    end_flags = frames->back().flags;
    auto es = wire::DecodeEndStream(frames->back().payload);
    EXPECT_TRUE(es.ok()) << frames->back().payload;
    if (es.ok()) end = *es;
  }
  std::vector<wire::Envelope> messages;
  uint8_t end_flags = 0;
  wire::EndStream end;
};

TEST_F(EngineTest, ConnectStreamingHappyPath) {
  Recorded r = Do(Post("/test.v1.Echo/Stream", {{"content-type", "application/connect+json"}}),
                  wire::EncodeEnvelope(0, "\"3\""));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.Get("content-type"), "application/connect+json");
  EXPECT_EQ(r.headers.Get("x-resp"), "1");
  EXPECT_TRUE(r.trailers.empty());
  StreamResult s(r);
  ASSERT_EQ(s.messages.size(), 3u);
  EXPECT_EQ(s.messages[0].payload, "\"m0\"");
  EXPECT_EQ(s.messages[2].payload, "\"m2\"");
  EXPECT_EQ(s.end_flags, wire::kFlagEndStream);
  EXPECT_FALSE(s.end.error);
  EXPECT_EQ(s.end.metadata.Get("x-trailer"), "t");

  // Proto codec, gzip negotiated: large messages are compressed per message.
  r = Do(Post("/test.v1.Echo/Stream",
              {{"content-type", "application/connect+proto"}, {"connect-accept-encoding", "gzip"}}),
         wire::EncodeEnvelope(0, Proto("big")));
  EXPECT_EQ(r.headers.Get("connect-content-encoding"), "gzip");
  StreamResult big(r);
  ASSERT_EQ(big.messages.size(), 1u);
  EXPECT_EQ(big.messages[0].flags, wire::kFlagCompressed);
  auto plain = wire::GzipDecompress(big.messages[0].payload, 1 << 20);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(ParseProto(*plain).value(), std::string(4096, 'b'));

  // Compressed request message.
  r = Do(Post("/test.v1.Echo/Stream", {{"content-type", "application/connect+proto"},
                                       {"connect-content-encoding", "gzip"}}),
         wire::EncodeEnvelope(wire::kFlagCompressed, *wire::GzipCompress(Proto("2"))));
  EXPECT_EQ(StreamResult(r).messages.size(), 2u);
}

TEST_F(EngineTest, ConnectStreamingErrors) {
  auto end_error = [&](std::string body, Metadata extra = {}) {
    Metadata h{{"content-type", "application/connect+proto"}};
    for (const auto& [k, v] : extra) h.Add(k, v);
    Recorded r = Do(Post("/test.v1.Echo/Stream", h), std::move(body));
    EXPECT_EQ(r.status, 200);  // always 200 for streams
    StreamResult s(r);
    EXPECT_TRUE(s.end.error.has_value());
    return s.end.error ? *s.end.error : wire::ConnectError{};
  };
  EXPECT_EQ(end_error("").code, StatusCode::kUnimplemented);  // zero messages
  EXPECT_EQ(
      end_error(wire::EncodeEnvelope(0, Proto("1")) + wire::EncodeEnvelope(0, Proto("1"))).code,
      StatusCode::kUnimplemented);
  EXPECT_EQ(end_error(wire::EncodeEnvelope(wire::kFlagCompressed, Proto("1"))).code,
            StatusCode::kInternal);
  EXPECT_EQ(end_error(wire::EncodeEnvelope(wire::kFlagEndStream, "{}")).code,
            StatusCode::kInternal);
  EXPECT_EQ(end_error(wire::EncodeEnvelope(0, Proto("1")).substr(0, 6)).code,
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      end_error(wire::EncodeEnvelope(0, Proto("1")), {{"connect-content-encoding", "br"}}).code,
      StatusCode::kUnimplemented);

  // Handler error after a message: end-stream carries error and trailers.
  Recorded r = Do(Post("/test.v1.Echo/Stream", {{"content-type", "application/connect+json"}}),
                  wire::EncodeEnvelope(0, "\"fail\""));
  StreamResult s(r);
  ASSERT_EQ(s.messages.size(), 1u);
  ASSERT_TRUE(s.end.error.has_value());
  EXPECT_EQ(s.end.error->code, StatusCode::kUnavailable);
  EXPECT_EQ(s.end.error->message, "overloaded ☺");
  EXPECT_EQ(s.end.metadata.Get("x-trailer"), "t");
  EXPECT_EQ(r.header_calls, 1);
  EXPECT_EQ(r.finish_calls, 1);
}

TEST_F(EngineTest, GrpcStatusTrailers) {
  Recorded r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/grpc"}}),
                  wire::EncodeEnvelope(0, Proto("hi")));
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.headers_end_stream);
  EXPECT_EQ(r.headers.Get("content-type"), "application/grpc");
  EXPECT_EQ(r.headers.Get("x-resp"), "1");
  EXPECT_EQ(r.headers.GetAll("grpc-status").size(), 0u);  // forged header dropped
  auto frames = wire::DecodeEnvelopes(r.body, 1 << 20);
  ASSERT_TRUE(frames.ok());
  ASSERT_EQ(frames->size(), 1u);
  EXPECT_EQ(ParseProto((*frames)[0].payload).value(), "hi");
  EXPECT_EQ(r.trailers.Get("grpc-status"), "0");
  EXPECT_FALSE(r.trailers.Has("grpc-message"));
  EXPECT_EQ(r.trailers.Get("x-trailer"), "t");

  // Immediate error: trailers-only.
  r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/grpc+proto"}}),
         wire::EncodeEnvelope(0, Proto("error:5")));
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.headers_end_stream);
  EXPECT_EQ(r.finish_calls, 0);
  EXPECT_EQ(r.data_calls, 0);
  EXPECT_EQ(r.headers.Get("grpc-status"), "5");
  EXPECT_EQ(r.headers.Get("grpc-message"), "failed: error:5");
  EXPECT_EQ(r.headers.Get("x-trailer"), "t");

  // Stream error after a message: status in trailers; message percent-encoded.
  r = Do(Post("/test.v1.Echo/Stream", {{"content-type", "application/grpc"}}),
         wire::EncodeEnvelope(0, Proto("fail")));
  EXPECT_FALSE(r.headers_end_stream);
  EXPECT_EQ(r.trailers.Get("grpc-status"), "14");
  EXPECT_EQ(r.trailers.Get("grpc-message"), "overloaded %E2%98%BA");

  // Unknown method and bad timeout are statuses, not HTTP errors.
  r = Do(Post("/test.v1.Echo/Nope", {{"content-type", "application/grpc"}}), "");
  EXPECT_EQ(r.headers.Get("grpc-status"), "12");
  r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/grpc"}, {"grpc-timeout", "1x"}}),
         wire::EncodeEnvelope(0, Proto("hi")));
  EXPECT_EQ(r.headers.Get("grpc-status"), "3");
  r = Do(
      Post("/test.v1.Echo/Echo", {{"content-type", "application/grpc"}, {"grpc-encoding", "br"}}),
      wire::EncodeEnvelope(0, Proto("hi")));
  EXPECT_EQ(r.headers.Get("grpc-status"), "12");
  EXPECT_EQ(r.headers.Get("grpc-accept-encoding"), "gzip");
}

TEST_F(EngineTest, GrpcWebTrailerFrame) {
  Recorded r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/grpc-web+proto"}}),
                  wire::EncodeEnvelope(0, Proto("hi")));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.Get("content-type"), "application/grpc-web+proto");
  EXPECT_TRUE(r.trailers.empty());  // no HTTP trailers for gRPC-Web
  const std::string msg = wire::EncodeEnvelope(0, Proto("hi"));
  const std::string block = "grpc-status: 0\r\nx-trailer: t\r\n";
  std::string want =
      msg + std::string("\x80\x00\x00\x00", 4) + static_cast<char>(block.size()) + block;
  EXPECT_EQ(r.body, want);

  // JSON codec and an error after no message: trailers-only.
  r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/grpc-web+json"}}),
         wire::EncodeEnvelope(0, "\"error:7\""));
  EXPECT_TRUE(r.headers_end_stream);
  EXPECT_EQ(r.headers.Get("grpc-status"), "7");
}

TEST_F(EngineTest, InterceptorRejectsAndSeesFinalStatus) {
  auto auth = std::make_shared<TestInterceptor>(true);
  auto metrics = std::make_shared<TestInterceptor>(false);
  router_->AddInterceptor(auth);
  router_->AddInterceptor(metrics);
  Recorded r = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/json"}}), "\"x\"");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(ErrorOf(r).code, StatusCode::kUnauthenticated);
  EXPECT_EQ(auth->on_request, 1);
  EXPECT_EQ(metrics->on_request, 0);  // later OnRequest skipped
  auto done = auth->WaitCompleted(1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(metrics->WaitCompleted(1)[0].code(), StatusCode::kUnauthenticated);

  r = Do(Post("/test.v1.Echo/Echo",
              {{"content-type", "application/json"}, {"authorization", "Bearer x"}}),
         "\"error:9\"");
  EXPECT_EQ(r.status, 400);
  done = auth->WaitCompleted(2);
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[1].code(), StatusCode::kFailedPrecondition);

  // Decode errors happen after OnRequest and are reported to OnComplete.
  r = Do(Post("/test.v1.Echo/Echo",
              {{"content-type", "application/json"}, {"authorization", "Bearer x"}}),
         "{bad");
  done = auth->WaitCompleted(3);
  ASSERT_EQ(done.size(), 3u);
  EXPECT_EQ(done[2].code(), StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, RejectTooLarge) {
  auto w = std::make_shared<FakeWriter>();
  engine().RejectTooLarge(Post("/test.v1.Echo/Echo", {{"content-type", "application/json"}}), w);
  Recorded r = w->Wait();
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(ErrorOf(r).code, StatusCode::kResourceExhausted);

  w = std::make_shared<FakeWriter>();
  engine().RejectTooLarge(Post("/test.v1.Echo/Echo", {{"content-type", "application/grpc"}}), w);
  r = w->Wait();
  EXPECT_EQ(r.headers.Get("grpc-status"), "8");

  w = std::make_shared<FakeWriter>();
  engine().RejectTooLarge(Post("/x", {}), w);
  EXPECT_EQ(w->Wait().status, 413);
}

}  // namespace
}  // namespace metald::rpc::internal

namespace metald::rpc::internal {
namespace {

// A call answered by CancelAll while still queued must not keep its deadline timer armed: with a
// client-chosen deadline (~115 days at most) the engine's destructor would otherwise hang.
TEST_F(EngineTest, QueuedCallWithHugeDeadlineDoesNotHoldShutdown) {
  std::vector<std::shared_ptr<FakeWriter>> sleepers;
  for (int i = 0; i < 4; ++i) {  // the fixture's engine has 4 handler threads: fill them all
    auto w = std::make_shared<FakeWriter>();
    engine().Handle(Post("/test.v1.Echo/Sleep", {{"content-type", "application/json"}}), "\"x\"", w,
                    std::make_shared<CancelToken>());
    sleepers.push_back(w);
  }
  auto queued = std::make_shared<FakeWriter>();
  engine().Handle(Post("/test.v1.Echo/Echo", {{"content-type", "application/json"},
                                              {"connect-timeout-ms", "9999999999"}}),
                  "\"x\"", queued, std::make_shared<CancelToken>());
  for (int i = 0; i < 3000 && queued->Snapshot().header_calls == 0; ++i) {
    engine().CancelAll(base::UnavailableError("Server is shutting down"));
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(queued->Wait().status, 503);
  SetGate(true);

  std::promise<void> destroyed;
  std::thread destroyer([&] {
    engine_.reset();
    destroyed.set_value();
  });
  if (destroyed.get_future().wait_for(120s) != std::future_status::ready) {
    ADD_FAILURE() << "Engine destructor hung on the queued call's deadline timer";
    std::_Exit(1);  // the destroyer thread cannot be joined
  }
  destroyer.join();
}

}  // namespace
// Starts a Wait call (it blocks until its token is cancelled) and returns its writer and token.
struct PendingCall {
  std::shared_ptr<FakeWriter> writer = std::make_shared<FakeWriter>();
  std::shared_ptr<CancelToken> cancel = std::make_shared<CancelToken>();
};

TEST_F(EngineTest, MethodConcurrencyLimitRefusesInsteadOfQueueing) {
  method_limits_ = {{"/test.v1.Echo/Wait", 2}};
  EXPECT_EQ(router_->SetMaxConcurrency("/no.such/Method", 1).code(), StatusCode::kNotFound);
  std::vector<PendingCall> running(2);
  for (auto& c : running) {
    engine().Handle(Post("/test.v1.Echo/Wait", {{"content-type", "application/json"}}), "\"x\"",
                    c.writer, c.cancel);
  }
  // The third concurrent Wait is refused at once, naming the limit.
  Recorded refused =
      Do(Post("/test.v1.Echo/Wait", {{"content-type", "application/json"}}), "\"x\"");
  EXPECT_EQ(refused.status, 429);
  auto err = ErrorOf(refused);
  EXPECT_EQ(err.code, StatusCode::kResourceExhausted);
  EXPECT_NE(err.message.find("Wait"), std::string::npos) << err.message;
  // Other methods are not limited by it.
  EXPECT_EQ(Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/json"}}), "\"y\"").status,
            200);
  // When one finishes, a new call is admitted again. The slot is released just after the
  // answer is written, so the first attempts may still be refused.
  running[0].cancel->Cancel(base::CancelledError("client went away"));
  running[0].writer->Wait();
  bool admitted = false;
  for (int attempt = 0; attempt < 500 && !admitted; ++attempt) {
    PendingCall again;
    engine().Handle(Post("/test.v1.Echo/Wait", {{"content-type", "application/json"}}), "\"x\"",
                    again.writer, again.cancel);
    again.cancel->Cancel(base::CancelledError("done"));
    Recorded r = again.writer->Wait();
    admitted = ErrorOf(r).code == StatusCode::kCancelled;
    if (!admitted) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(admitted);
  running[1].cancel->Cancel(base::CancelledError("done"));
  running[1].writer->Wait();
}

TEST_F(EngineTest, PendingCallLimitAnswersOverloadedAtOnce) {
  max_pending_calls_ = 3;
  std::vector<PendingCall> running(3);
  for (auto& c : running) {
    engine().Handle(Post("/test.v1.Echo/Wait", {{"content-type", "application/json"}}), "\"x\"",
                    c.writer, c.cancel);
  }
  Recorded refused =
      Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/json"}}), "\"y\"");
  EXPECT_EQ(ErrorOf(refused).code, StatusCode::kResourceExhausted);
  for (auto& c : running) {
    c.cancel->Cancel(base::CancelledError("done"));
    c.writer->Wait();
  }
  int status = 0;
  for (int attempt = 0; attempt < 500 && status != 200; ++attempt) {
    status = Do(Post("/test.v1.Echo/Echo", {{"content-type", "application/json"}}), "\"y\"").status;
    if (status != 200) std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(status, 200);
}

namespace {

// Request and response messages live on a per-call arena whose first block is per thread.
// Handlers must still see ordinary messages: heap messages swapped or moved in, copies kept
// after the call, and a nonblocking handler that runs another nonblocking call inline on the
// same thread (which then must not share the thread's first block).
TEST(EngineArenaTest, HandlerMessagesBehaveLikeHeapMessages) {
  auto router = std::make_shared<Router>();
  Engine* engine_ptr = nullptr;
  std::vector<StringValue> kept;  // copies of requests, read after their calls ended

  MethodHandler inner;
  inner.desc = {"test.v1.Arena", "Inner", "/test.v1.Arena/Inner", MethodKind::kUnary, false, true};
  inner.request_prototype = &StringValue::default_instance();
  inner.response_prototype = &StringValue::default_instance();
  inner.unary = [&kept](CallContext&, const google::protobuf::Message& req,
                        google::protobuf::Message& resp) -> base::Status {
    const auto& in = static_cast<const StringValue&>(req);
    kept.push_back(in);
    // A heap message swapped into the arena response.
    auto heap = std::make_unique<StringValue>();
    heap->set_value("inner(" + in.value() + ")" + std::string(64, 'i'));
    static_cast<StringValue&>(resp).Swap(heap.get());
    return base::OkStatus();
  };
  ASSERT_TRUE(router->AddMethod(inner).ok());

  MethodHandler outer = inner;
  outer.desc = {"test.v1.Arena", "Outer", "/test.v1.Arena/Outer", MethodKind::kUnary, false, true};
  outer.unary = [&kept, &engine_ptr](CallContext&, const google::protobuf::Message& req,
                                     google::protobuf::Message& resp) -> base::Status {
    const auto& in = static_cast<const StringValue&>(req);
    // Fill this thread's arena block before the nested call allocates.
    static_cast<StringValue&>(resp).set_value(std::string(8 << 10, 'o'));
    RequestHead head;
    head.method = "POST";
    head.path = "/test.v1.Arena/Inner";
    head.headers = {{"content-type", "application/proto"}};
    head.peer = "unix";
    auto w = std::make_shared<FakeWriter>();
    engine_ptr->Handle(std::move(head), Proto(in.value() + "-nested"), w,
                       std::make_shared<CancelToken>());
    Recorded nested = w->Wait();  // inline: already answered
    if (nested.status != 200) return base::InternalError("nested call failed");
    StringValue moved = ParseProto(nested.body);
    kept.push_back(in);
    static_cast<StringValue&>(resp) = std::move(moved);
    return base::OkStatus();
  };
  ASSERT_TRUE(router->AddMethod(outer).ok());

  Engine engine(router, EngineOptions{4u << 20, 2, 16});
  engine_ptr = &engine;
  for (int i = 0; i < 3; ++i) {
    RequestHead head;
    head.method = "POST";
    head.path = "/test.v1.Arena/Outer";
    head.headers = {{"content-type", "application/json"}};
    head.peer = "unix";
    auto w = std::make_shared<FakeWriter>();
    std::string value = "call" + std::to_string(i) + std::string(100, 'x');
    engine.Handle(std::move(head), "\"" + value + "\"", w, std::make_shared<CancelToken>());
    Recorded r = w->Wait();
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body, "\"inner(" + value + "-nested)" + std::string(64, 'i') + "\"");
  }
  ASSERT_EQ(kept.size(), 6u);
  for (int i = 0; i < 3; ++i) {
    std::string value = "call" + std::to_string(i) + std::string(100, 'x');
    EXPECT_EQ(kept[2 * i].value(), value + "-nested");
    EXPECT_EQ(kept[2 * i + 1].value(), value);
    EXPECT_EQ(kept[2 * i].GetArena(), nullptr);  // copies made by the handler are heap messages
  }
}

}  // namespace
}  // namespace metald::rpc::internal

// Tests for the HTTP/2 server session (http2.cc). A client-side nghttp2 session in the same
// process talks to the server session through memory; the test thread plays the connection's
// strand (it alone calls Session methods), and a real Engine with hand-written handlers over
// google.protobuf.StringValue serves the calls on its handler pool.

#include <google/protobuf/wrappers.pb.h>
#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "metald/base/status.h"
#include "metald/rpc/call.h"
#include "metald/rpc/internal/engine.h"
#include "metald/rpc/internal/session.h"
#include "metald/rpc/metadata.h"
#include "metald/rpc/router.h"

namespace metald::rpc::internal {
namespace {

using google::protobuf::StringValue;
using namespace std::chrono_literals;

constexpr auto kTimeout = 20s;  // only to turn a hang into a failure

// ---------------------------------------------------------------------------------------------
// Helpers.

std::string Envelope(const google::protobuf::Message& m) {
  std::string payload = m.SerializeAsString();
  std::string out(5, '\0');
  uint32_t n = static_cast<uint32_t>(payload.size());
  out[1] = static_cast<char>(n >> 24);
  out[2] = static_cast<char>(n >> 16);
  out[3] = static_cast<char>(n >> 8);
  out[4] = static_cast<char>(n);
  return out + payload;
}

std::string EnvelopeOf(const std::string& value) {
  StringValue v;
  v.set_value(value);
  return Envelope(v);
}

// Splits a gRPC body into message values; nullopt if it is not whole envelopes of StringValue.
std::optional<std::vector<std::string>> DecodeMessages(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    if (body.size() - pos < 5) return std::nullopt;
    uint32_t n = (static_cast<uint32_t>(static_cast<uint8_t>(body[pos + 1])) << 24) |
                 (static_cast<uint32_t>(static_cast<uint8_t>(body[pos + 2])) << 16) |
                 (static_cast<uint32_t>(static_cast<uint8_t>(body[pos + 3])) << 8) |
                 static_cast<uint32_t>(static_cast<uint8_t>(body[pos + 4]));
    if (body.size() - pos - 5 < n) return std::nullopt;
    StringValue v;
    if (!v.ParseFromArray(body.data() + pos + 5, static_cast<int>(n))) return std::nullopt;
    out.push_back(v.value());
    pos += 5 + n;
  }
  return out;
}

struct RawFrame {
  uint8_t type;
  uint8_t flags;
  uint32_t stream_id;
  std::string payload;
};

// Splits server output (which starts with frames: the server sends no preface) into frames.
std::vector<RawFrame> ParseFrames(const std::string& bytes) {
  std::vector<RawFrame> frames;
  size_t pos = 0;
  while (bytes.size() - pos >= 9) {
    auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(bytes[pos + i])); };
    uint32_t len = (b(0) << 16) | (b(1) << 8) | b(2);
    if (bytes.size() - pos - 9 < len) break;
    RawFrame f{static_cast<uint8_t>(b(3)), static_cast<uint8_t>(b(4)),
               ((b(5) & 0x7f) << 24) | (b(6) << 16) | (b(7) << 8) | b(8),
               bytes.substr(pos + 9, len)};
    frames.push_back(std::move(f));
    pos += 9 + len;
  }
  return frames;
}

// The GOAWAY error code in `frames`, or nullopt when there is no GOAWAY.
std::optional<uint32_t> GoawayCode(const std::vector<RawFrame>& frames) {
  for (const auto& f : frames) {
    if (f.type != NGHTTP2_GOAWAY || f.payload.size() < 8) continue;
    auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(f.payload[i])); };
    return (b(4) << 24) | (b(5) << 16) | (b(6) << 8) | b(7);
  }
  return std::nullopt;
}

// Releases a streaming handler step by step.
class Gate {
 public:
  void Open(int n = 1) {
    std::lock_guard lock(mu_);
    opened_ += n;
    cv_.notify_all();
  }
  // Waits up to `ms` for the first opening; returns whether the gate is open.
  bool WaitForMs(int ms) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return opened_ >= 1; });
  }
  // Waits until at least `n` openings; false on timeout.
  bool WaitFor(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kTimeout, [&] { return opened_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int opened_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The connection side: WakeWriter wakes the pump loop; the test thread is the strand.

class FakeHost : public SessionHost {
 public:
  void WakeWriter() override {
    std::lock_guard lock(mu_);
    woken_ = true;
    cv_.notify_all();
  }
  bool OnIoThread() const override { return std::this_thread::get_id() == io_thread_; }
  const std::string& peer() const override { return peer_; }
  bool tls() const override { return false; }

  // Waits briefly for a WakeWriter; returns whether one came.
  bool WaitForWake(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    bool woken = cv_.wait_for(lock, timeout, [&] { return woken_; });
    woken_ = false;
    return woken;
  }

 private:
  const std::thread::id io_thread_ = std::this_thread::get_id();
  const std::string peer_ = "127.0.0.1:5000";
  std::mutex mu_;
  std::condition_variable cv_;
  bool woken_ = false;
};

// ---------------------------------------------------------------------------------------------
// A client-side nghttp2 session that records what it receives. Strand-only (the test thread).

class Client {
 public:
  struct StreamResult {
    int status = 0;
    Metadata headers;
    Metadata trailers;
    std::string body;
    int data_frames = 0;
    bool closed = false;
    uint32_t error_code = 0;  // RST_STREAM code when closed
  };

  Client() {
    nghttp2_session_callbacks* cbs = nullptr;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, &OnHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &OnFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &OnData);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &OnClose);
    nghttp2_session_client_new(&session_, cbs, this);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
  }
  ~Client() { nghttp2_session_del(session_); }

  // Submits a request; `body` nullopt sends END_STREAM on the HEADERS.
  int32_t Submit(const std::string& path, std::optional<std::string> body,
                 Metadata extra = {{"content-type", "application/grpc"}, {"te", "trailers"}},
                 const std::string& method = "POST") {
    std::vector<std::pair<std::string, std::string>> fields = {
        {":method", method}, {":scheme", "http"}, {":authority", "localhost:1"}, {":path", path}};
    for (const auto& [k, v] : extra) fields.emplace_back(k, v);
    std::vector<nghttp2_nv> nv;
    for (auto& [k, v] : fields) {
      nv.push_back({reinterpret_cast<uint8_t*>(k.data()), reinterpret_cast<uint8_t*>(v.data()),
                    k.size(), v.size(), NGHTTP2_NV_FLAG_NONE});
    }
    auto upload = std::make_shared<Upload>();
    nghttp2_data_provider provider{};
    if (body) {
      upload->data = std::move(*body);
      provider.source.ptr = upload.get();
      provider.read_callback = &ReadUpload;
    }
    int32_t id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(),
                                        body ? &provider : nullptr, nullptr);
    EXPECT_GT(id, 0);
    uploads_[id] = upload;
    streams_[id];
    return id;
  }
  int32_t SubmitGrpc(const std::string& path, const std::string& value) {
    return Submit(path, EnvelopeOf(value));
  }

  void Reset(int32_t id) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  }

  std::string Output() {
    std::string out;
    for (;;) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n <= 0) break;
      out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    return out;
  }
  void Input(const std::string& bytes) {
    ssize_t n = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(bytes.data()),
                                         bytes.size());
    EXPECT_EQ(n, static_cast<ssize_t>(bytes.size())) << nghttp2_strerror(static_cast<int>(n));
  }

  StreamResult& stream(int32_t id) { return streams_[id]; }
  bool closed(int32_t id) { return streams_[id].closed; }
  std::optional<uint32_t> goaway_code() const { return goaway_code_; }
  int32_t goaway_last_stream() const { return goaway_last_stream_; }
  int goaways() const { return goaways_; }

 private:
  struct Upload {
    std::string data;
    size_t offset = 0;
  };

  static Client* Self(void* p) { return static_cast<Client*>(p); }

  static ssize_t ReadUpload(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                            nghttp2_data_source* source, void*) {
    auto* u = static_cast<Upload*>(source->ptr);
    size_t n = std::min(length, u->data.size() - u->offset);
    std::memcpy(buf, u->data.data() + u->offset, n);
    u->offset += n;
    if (u->offset == u->data.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }
  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* p) {
    std::string n(reinterpret_cast<const char*>(name), namelen);
    std::string v(reinterpret_cast<const char*>(value), valuelen);
    auto& s = Self(p)->streams_[frame->hd.stream_id];
    if (n == ":status") {
      s.status = std::stoi(v);
    } else if (frame->headers.cat == NGHTTP2_HCAT_HEADERS && s.status != 0 &&
               Self(p)->saw_final_headers_[frame->hd.stream_id]) {
      s.trailers.Add(n, v);
    } else {
      s.headers.Add(n, v);
    }
    return 0;
  }
  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* p) {
    Client* self = Self(p);
    if (frame->hd.type == NGHTTP2_HEADERS) {
      self->saw_final_headers_[frame->hd.stream_id] = true;
    } else if (frame->hd.type == NGHTTP2_DATA) {
      self->streams_[frame->hd.stream_id].data_frames++;
    } else if (frame->hd.type == NGHTTP2_GOAWAY) {
      self->goaways_++;
      self->goaway_code_ = frame->goaway.error_code;
      self->goaway_last_stream_ = frame->goaway.last_stream_id;
    }
    return 0;
  }
  static int OnData(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len,
                    void* p) {
    Self(p)->streams_[id].body.append(reinterpret_cast<const char*>(data), len);
    return 0;
  }
  static int OnClose(nghttp2_session*, int32_t id, uint32_t code, void* p) {
    auto& s = Self(p)->streams_[id];
    s.closed = true;
    s.error_code = code;
    return 0;
  }

  nghttp2_session* session_ = nullptr;
  std::map<int32_t, StreamResult> streams_;
  std::map<int32_t, bool> saw_final_headers_;
  std::map<int32_t, std::shared_ptr<Upload>> uploads_;
  std::optional<uint32_t> goaway_code_;
  int32_t goaway_last_stream_ = -1;
  int goaways_ = 0;
};

// The gRPC status of a finished stream: from the trailers, or from the headers (trailers-only).
std::optional<std::string> GrpcStatus(const Client::StreamResult& s) {
  if (auto v = s.trailers.Get("grpc-status")) return std::string(*v);
  if (auto v = s.headers.Get("grpc-status")) return std::string(*v);
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Handlers and fixture.

struct Observed {
  std::atomic<int> say_calls{0};
  std::atomic<int> blocked_now{0};
  std::atomic<int> blocked_max{0};
  std::atomic<int> blocked_started{0};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<base::Status> cancel_reasons;  // guarded by mu
  std::vector<base::Status> write_results;   // guarded by mu
  std::vector<HttpRequest> http_requests;    // guarded by mu
};

MethodHandler Unary(const std::string& name, UnaryHandler fn) {
  MethodHandler h;
  h.desc.service = "test.Echo";
  h.desc.method = name;
  h.desc.path = "/test.Echo/" + name;
  h.desc.kind = MethodKind::kUnary;
  h.request_prototype = &StringValue::default_instance();
  h.response_prototype = &StringValue::default_instance();
  h.unary = std::move(fn);
  return h;
}

MethodHandler Streaming(const std::string& name, ServerStreamHandler fn) {
  MethodHandler h;
  h.desc.service = "test.Echo";
  h.desc.method = name;
  h.desc.path = "/test.Echo/" + name;
  h.desc.kind = MethodKind::kServerStreaming;
  h.request_prototype = &StringValue::default_instance();
  h.response_prototype = &StringValue::default_instance();
  h.stream = std::move(fn);
  return h;
}

class Http2SessionTest : public ::testing::Test {
 protected:
  // Builds the router, engine and session. Call once per test, after adjusting limits_.
  void Start() {
    auto router = std::make_shared<Router>();
    Observed* obs = &obs_;
    ASSERT_TRUE(router
                    ->AddMethod(Unary("Say",
                                      [obs](CallContext& ctx, const google::protobuf::Message& req,
                                            google::protobuf::Message& resp) {
                                        obs->say_calls++;
                                        const auto& in = static_cast<const StringValue&>(req);
                                        static_cast<StringValue&>(resp).set_value("hello " +
                                                                                  in.value());
                                        ctx.response_trailers().Add("x-trailer", "t-" + in.value());
                                        return base::OkStatus();
                                      }))
                    .ok());
    // Blocks until cancelled, or until `gate_` opens; records the concurrency it saw.
    Gate* gate = &gate_;
    ASSERT_TRUE(router
                    ->AddMethod(Unary(
                        "Block",
                        [obs, gate](CallContext& ctx, const google::protobuf::Message&,
                                    google::protobuf::Message& resp) {
                          int now = ++obs->blocked_now;
                          int prev = obs->blocked_max.load();
                          while (now > prev && !obs->blocked_max.compare_exchange_weak(prev, now)) {
                          }
                          obs->blocked_started++;
                          {
                            std::lock_guard lock(obs->mu);
                            obs->cv.notify_all();
                          }
                          // Wait for the gate or a cancellation, whichever first.
                          while (!ctx.cancelled() && !gate->WaitForMs(5)) {
                          }
                          --obs->blocked_now;
                          if (ctx.cancelled()) {
                            std::lock_guard lock(obs->mu);
                            obs->cancel_reasons.push_back(ctx.cancel_token().reason());
                            obs->cv.notify_all();
                            return ctx.cancel_token().reason();
                          }
                          static_cast<StringValue&>(resp).set_value("released");
                          return base::OkStatus();
                        }))
                    .ok());
    // Writes request.value() messages "m0".."mN-1"; before writing message i>0 it waits for
    // the gate to have opened i times.
    ASSERT_TRUE(
        router
            ->AddMethod(Streaming(
                "Count",
                [obs, gate](CallContext&, const google::protobuf::Message& req, StreamWriter& w) {
                  int n = std::stoi(static_cast<const StringValue&>(req).value());
                  for (int i = 0; i < n; ++i) {
                    if (i > 0 && !gate->WaitFor(i)) return base::DeadlineExceededError("gate");
                    StringValue m;
                    m.set_value("m" + std::to_string(i));
                    base::Status st = w.Write(m);
                    std::lock_guard lock(obs->mu);
                    obs->write_results.push_back(st);
                    obs->cv.notify_all();
                    if (!st.ok()) return st;
                  }
                  return base::OkStatus();
                }))
            .ok());
    // Writes request.value() messages of 64 KiB each, as fast as backpressure allows.
    ASSERT_TRUE(router
                    ->AddMethod(Streaming(
                        "Flood",
                        [](CallContext&, const google::protobuf::Message& req, StreamWriter& w) {
                          int n = std::stoi(static_cast<const StringValue&>(req).value());
                          for (int i = 0; i < n; ++i) {
                            StringValue m;
                            m.set_value(std::string(64 << 10, 'a' + i % 26));
                            RETURN_IF_ERROR(w.Write(m));
                          }
                          return base::OkStatus();
                        }))
                    .ok());
    ASSERT_TRUE(router
                    ->AddHttpRoute("/healthz",
                                   [obs](const HttpRequest& req) {
                                     std::lock_guard lock(obs->mu);
                                     obs->http_requests.push_back(req);
                                     HttpResponse resp;
                                     resp.body = "ok";
                                     return resp;
                                   })
                    .ok());
    EngineOptions eo;
    eo.max_message_bytes = limits_.max_message_bytes;
    eo.handler_threads = 8;
    engine_ = std::make_unique<Engine>(router, eo);
    session_ = MakeHttp2Session(&host_, engine_.get(), limits_);
  }

  void TearDown() override {
    gate_.Open(1000);
    if (session_) session_->OnClose();
    session_.reset();
    engine_.reset();
  }

  // Moves bytes both ways until pred() holds; false on timeout. Records the server's first
  // non-OK OnReadable status in read_status_.
  bool PumpUntil(const std::function<bool()>& pred) {
    auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      bool progress = false;
      std::string c = client_.Output();
      if (!c.empty()) {
        base::Status st = session_->OnReadable(c);
        if (!st.ok() && read_status_.ok()) read_status_ = st;
        progress = true;
      }
      std::string s;
      session_->CollectOutput(&s);
      if (!s.empty()) {
        client_.Input(s);
        progress = true;
      }
      if (!progress) host_.WaitForWake(5ms);
    }
    return true;
  }

  SessionLimits limits_;
  FakeHost host_;
  Observed obs_;
  Gate gate_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Session> session_;
  Client client_;
  base::Status read_status_;
};

TEST_F(Http2SessionTest, UnaryWithTrailers) {
  Start();
  int32_t id = client_.SubmitGrpc("/test.Echo/Say", "bob");
  ASSERT_TRUE(PumpUntil([&] { return client_.closed(id); }));
  const auto& s = client_.stream(id);
  EXPECT_EQ(s.error_code, 0u);
  EXPECT_EQ(s.status, 200);
  EXPECT_EQ(s.headers.Get("content-type").value_or(""), "application/grpc");
  auto msgs = DecodeMessages(s.body);
  ASSERT_TRUE(msgs.has_value());
  EXPECT_EQ(*msgs, std::vector<std::string>{"hello bob"});
  EXPECT_EQ(s.trailers.Get("grpc-status").value_or("none"), "0");
  EXPECT_EQ(s.trailers.Get("x-trailer").value_or("none"), "t-bob");
  EXPECT_TRUE(read_status_.ok()) << read_status_.ToString();
  // The exchange is over: nothing open, nothing to say.
  EXPECT_FALSE(session_->Busy());
  EXPECT_FALSE(session_->ShouldClose());
}

TEST_F(Http2SessionTest, PlainHttpRouteSeesPathQueryAndHost) {
  Start();
  int32_t id = client_.Submit("/healthz?verbose=1&x=%20", std::nullopt, {}, "GET");
  ASSERT_TRUE(PumpUntil([&] { return client_.closed(id); }));
  EXPECT_EQ(client_.stream(id).status, 200);
  EXPECT_EQ(client_.stream(id).body, "ok");
  std::lock_guard lock(obs_.mu);
  ASSERT_EQ(obs_.http_requests.size(), 1u);
  const HttpRequest& req = obs_.http_requests[0];
  EXPECT_EQ(req.method, "GET");
  EXPECT_EQ(req.path, "/healthz");
  EXPECT_EQ(req.query, "verbose=1&x=%20");
  EXPECT_EQ(req.headers.Get("host").value_or(""), "localhost:1");
  EXPECT_FALSE(req.headers.Has(":authority"));
}

TEST_F(Http2SessionTest, TimerKindFollowsStreams) {
  Start();
  EXPECT_EQ(session_->timer_kind(), Session::TimerKind::kIdle);
  // Headers sent, body not yet: the request is still arriving.
  int32_t id = client_.Submit("/test.Echo/Block", EnvelopeOf("x"));
  std::string preface_and_headers = client_.Output();
  // Cut the client's output before the DATA frame: feed everything but the last 9+6 bytes
  // (the DATA frame carrying the 6-byte envelope with END_STREAM).
  ASSERT_GT(preface_and_headers.size(), 15u);
  ASSERT_TRUE(
      session_->OnReadable(preface_and_headers.substr(0, preface_and_headers.size() - 15)).ok());
  EXPECT_EQ(session_->timer_kind(), Session::TimerKind::kRead);
  EXPECT_TRUE(session_->Busy());
  ASSERT_TRUE(
      session_->OnReadable(preface_and_headers.substr(preface_and_headers.size() - 15)).ok());
  ASSERT_TRUE(PumpUntil([&] { return obs_.blocked_started.load() == 1; }));
  EXPECT_EQ(session_->timer_kind(), Session::TimerKind::kNone);
  gate_.Open();
  ASSERT_TRUE(PumpUntil([&] { return client_.closed(id); }));
  EXPECT_EQ(session_->timer_kind(), Session::TimerKind::kIdle);
  EXPECT_FALSE(session_->Busy());
}

TEST_F(Http2SessionTest, ConcurrentStreams) {
  Start();
  std::vector<int32_t> ids;
  for (int i = 0; i < 8; ++i)
    ids.push_back(client_.SubmitGrpc("/test.Echo/Say", std::to_string(i)));
  ASSERT_TRUE(PumpUntil([&] {
    for (int32_t id : ids) {
      if (!client_.closed(id)) return false;
    }
    return true;
  }));
  for (int i = 0; i < 8; ++i) {
    const auto& s = client_.stream(ids[i]);
    auto msgs = DecodeMessages(s.body);
    ASSERT_TRUE(msgs.has_value());
    EXPECT_EQ(*msgs, std::vector<std::string>{"hello " + std::to_string(i)});
    EXPECT_EQ(GrpcStatus(s).value_or("none"), "0");
  }
  EXPECT_EQ(obs_.say_calls.load(), 8);
}

TEST_F(Http2SessionTest, ClientResetCancelsCall) {
  Start();
  int32_t id = client_.SubmitGrpc("/test.Echo/Block", "x");
  ASSERT_TRUE(PumpUntil([&] { return obs_.blocked_started.load() == 1; }));
  EXPECT_TRUE(session_->Busy());
  client_.Reset(id);
  ASSERT_TRUE(PumpUntil([&] {
    std::lock_guard lock(obs_.mu);
    return !obs_.cancel_reasons.empty();
  }));
  std::lock_guard lock(obs_.mu);
  EXPECT_EQ(obs_.cancel_reasons[0].code(), base::StatusCode::kCancelled)
      << obs_.cancel_reasons[0].ToString();
}

TEST_F(Http2SessionTest, ConnectionCloseCancelsCall) {
  Start();
  client_.SubmitGrpc("/test.Echo/Block", "x");
  ASSERT_TRUE(PumpUntil([&] { return obs_.blocked_started.load() == 1; }));
  session_->OnClose();
  std::unique_lock lock(obs_.mu);
  ASSERT_TRUE(obs_.cv.wait_for(lock, kTimeout, [&] { return !obs_.cancel_reasons.empty(); }));
  EXPECT_EQ(obs_.cancel_reasons[0].code(), base::StatusCode::kCancelled);
}

TEST_F(Http2SessionTest, GarbageAfterPrefaceSendsGoaway) {
  Start();
  std::string bytes = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  bytes += std::string("\x00\x00\x00\x04\x00\x00\x00\x00\x00", 9);  // empty SETTINGS
  // DATA on stream 0: a connection error (RFC 9113 §6.1).
  bytes += std::string("\x00\x00\x04\x00\x00\x00\x00\x00\x00", 9) + "junk";
  base::Status st = session_->OnReadable(bytes);
  EXPECT_FALSE(st.ok());
  std::string out;
  session_->CollectOutput(&out);
  auto code = GoawayCode(ParseFrames(out));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, static_cast<uint32_t>(NGHTTP2_PROTOCOL_ERROR));
  EXPECT_TRUE(session_->ShouldClose());
}

TEST_F(Http2SessionTest, BadPrefaceSendsGoaway) {
  Start();
  base::Status st = session_->OnReadable("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_FALSE(st.ok());
  std::string out;
  session_->CollectOutput(&out);
  auto frames = ParseFrames(out);
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames[0].type, NGHTTP2_SETTINGS);  // the server's own preface comes first
  auto code = GoawayCode(frames);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, static_cast<uint32_t>(NGHTTP2_PROTOCOL_ERROR));
  EXPECT_TRUE(session_->ShouldClose());
}

TEST_F(Http2SessionTest, ServerSettingsAdvertiseLimits) {
  limits_.max_concurrent_streams = 7;
  limits_.max_header_bytes = 12345;
  Start();
  std::string out;
  session_->CollectOutput(&out);
  auto frames = ParseFrames(out);
  ASSERT_FALSE(frames.empty());
  ASSERT_EQ(frames[0].type, NGHTTP2_SETTINGS);
  std::map<int, uint32_t> settings;
  const std::string& p = frames[0].payload;
  for (size_t i = 0; i + 6 <= p.size(); i += 6) {
    auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<uint8_t>(p[i + k])); };
    settings[static_cast<int>((b(0) << 8) | b(1))] =
        (b(2) << 24) | (b(3) << 16) | (b(4) << 8) | b(5);
  }
  EXPECT_EQ(settings[NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS], 7u);
  EXPECT_EQ(settings[NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE], 12345u);
  EXPECT_GT(settings[NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE], 65535u);
}

TEST_F(Http2SessionTest, OversizeBodyIsResourceExhausted) {
  limits_.max_message_bytes = 1024;
  Start();
  int32_t id = client_.SubmitGrpc("/test.Echo/Say", std::string(64 << 10, 'z'));
  ASSERT_TRUE(PumpUntil([&] { return client_.closed(id); }));
  const auto& s = client_.stream(id);
  EXPECT_EQ(s.status, 200);
  EXPECT_EQ(GrpcStatus(s).value_or("none"), "8");  // RESOURCE_EXHAUSTED
  EXPECT_EQ(obs_.say_calls.load(), 0);
  EXPECT_TRUE(read_status_.ok());
  // The connection is still usable.
  int32_t id2 = client_.SubmitGrpc("/test.Echo/Say", "small");
  ASSERT_TRUE(PumpUntil([&] { return client_.closed(id2); }));
  EXPECT_EQ(GrpcStatus(client_.stream(id2)).value_or("none"), "0");
}

TEST_F(Http2SessionTest, TooManyHeadersIs431) {
  limits_.max_header_count = 10;
  Start();
  Metadata extra{{"content-type", "application/grpc"}};
  for (int i = 0; i < 20; ++i) extra.Add("x-h" + std::to_string(i), "v");
  int32_t id = client_.Submit("/test.Echo/Say", EnvelopeOf("a"), extra);
  ASSERT_TRUE(PumpUntil([&] { return client_.closed(id); }));
  EXPECT_EQ(client_.stream(id).status, 431);
  EXPECT_EQ(obs_.say_calls.load(), 0);
}

TEST_F(Http2SessionTest, MalformedRequestIsReset) {
  Start();
  // Connection-specific fields are malformed in HTTP/2 (RFC 9113 §8.2.2).
  int32_t id = client_.Submit("/test.Echo/Say", EnvelopeOf("a"),
                              {{"content-type", "application/grpc"}, {"connection", "close"}});
  ASSERT_TRUE(PumpUntil([&] { return client_.closed(id); }));
  EXPECT_EQ(client_.stream(id).error_code, static_cast<uint32_t>(NGHTTP2_PROTOCOL_ERROR));
  EXPECT_EQ(obs_.say_calls.load(), 0);
  EXPECT_TRUE(read_status_.ok());
}

TEST_F(Http2SessionTest, ServerStreamingFlushesEachMessage) {
  Start();
  int32_t id = client_.SubmitGrpc("/test.Echo/Count", "3");
  for (int i = 0; i < 3; ++i) {
    // Message i reaches the client while the handler waits before writing message i+1.
    ASSERT_TRUE(PumpUntil([&] {
      auto msgs = DecodeMessages(client_.stream(id).body);
      return msgs && msgs->size() == static_cast<size_t>(i + 1);
    })) << "message "
        << i;
    // The handler has not returned: it waits on the gate before its next message.
    if (i < 2) {
      ASSERT_FALSE(client_.closed(id));
    }
    {
      std::lock_guard lock(obs_.mu);
      // Write() may not have returned yet, but message i+1 cannot have been written.
      EXPECT_LE(obs_.write_results.size(), static_cast<size_t>(i + 1));
    }
    gate_.Open();
  }
  ASSERT_TRUE(PumpUntil([&] { return client_.closed(id); }));
  const auto& s = client_.stream(id);
  EXPECT_EQ(*DecodeMessages(s.body), (std::vector<std::string>{"m0", "m1", "m2"}));
  EXPECT_EQ(GrpcStatus(s).value_or("none"), "0");
  std::lock_guard lock(obs_.mu);
  for (const auto& st : obs_.write_results) EXPECT_TRUE(st.ok()) << st.ToString();
}

TEST_F(Http2SessionTest, LargeStreamUnderBackpressureArrivesWhole) {
  limits_.max_pending_bytes_per_exchange = 16 << 10;
  Start();
  int32_t id = client_.SubmitGrpc("/test.Echo/Flood", "40");  // 2.5 MiB through a 64 KiB window
  ASSERT_TRUE(PumpUntil([&] { return client_.closed(id); }));
  const auto& s = client_.stream(id);
  auto msgs = DecodeMessages(s.body);
  ASSERT_TRUE(msgs.has_value());
  ASSERT_EQ(msgs->size(), 40u);
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ((*msgs)[i], std::string(64 << 10, 'a' + i % 26)) << i;
  }
  EXPECT_EQ(GrpcStatus(s).value_or("none"), "0");
}

TEST_F(Http2SessionTest, StreamsBeyondLimitAreRefused) {
  limits_.max_concurrent_streams = 2;
  Start();
  // All requests leave before the client has seen the server's SETTINGS, so the client cannot
  // hold them back; the server must refuse those over its limit.
  std::vector<int32_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(client_.SubmitGrpc("/test.Echo/Block", "x"));
  ASSERT_TRUE(session_->OnReadable(client_.Output()).ok());
  ASSERT_TRUE(PumpUntil([&] {
    int closed = 0;
    for (int32_t id : ids) closed += client_.closed(id) ? 1 : 0;
    return closed == 3 && obs_.blocked_started.load() == 2;
  }));
  int refused = 0;
  for (int32_t id : ids) {
    if (client_.closed(id)) {
      EXPECT_EQ(client_.stream(id).error_code, static_cast<uint32_t>(NGHTTP2_REFUSED_STREAM));
      ++refused;
    }
  }
  EXPECT_EQ(refused, 3);
  gate_.Open(1000);
  ASSERT_TRUE(PumpUntil([&] {
    for (int32_t id : ids) {
      if (!client_.closed(id)) return false;
    }
    return true;
  }));
  EXPECT_EQ(obs_.blocked_max.load(), 2);
  EXPECT_TRUE(read_status_.ok()) << read_status_.ToString();
}

TEST_F(Http2SessionTest, GracefulShutdownFinishesCallsInFlight) {
  Start();
  int32_t id = client_.SubmitGrpc("/test.Echo/Block", "x");
  ASSERT_TRUE(PumpUntil([&] { return obs_.blocked_started.load() == 1; }));
  session_->BeginShutdown();
  // Final GOAWAY (after the PING round trip) names the stream in flight as still served.
  ASSERT_TRUE(PumpUntil([&] { return client_.goaways() >= 2; }));
  EXPECT_EQ(client_.goaway_code().value_or(99), static_cast<uint32_t>(NGHTTP2_NO_ERROR));
  EXPECT_EQ(client_.goaway_last_stream(), id);
  EXPECT_FALSE(session_->ShouldClose());
  gate_.Open();
  ASSERT_TRUE(PumpUntil([&] { return client_.closed(id); }));
  EXPECT_EQ(GrpcStatus(client_.stream(id)).value_or("none"), "0");
  std::string out;
  session_->CollectOutput(&out);
  EXPECT_TRUE(session_->ShouldClose());
  EXPECT_FALSE(session_->Busy());
}

}  // namespace
}  // namespace metald::rpc::internal

#pragma once
// Shared pieces of the rpc fuzz targets (header-only, fuzz builds only): a small Router, a
// SessionHost whose strand is the fuzzing thread, a recording ResponseWriter that checks the
// ResponseWriter contract, and an engine barrier.
//
// Determinism: every handler a fuzz input can reach is either nonblocking (runs inline on the
// fuzzing thread) or a plain HTTP route (runs on the engine's pool, which has one thread).
// DrainEngine() waits until every route task posted so far has written its response, so one
// input always produces the same output, and no exchange outlives its iteration. One Engine
// serves the whole process (FuzzEngine): building one per input would cost three thread starts
// and joins per run, which dominated the run time. What may still run between iterations is the
// engine's timer thread freeing a completed call's stopped deadline timer (reachable memory,
// never a response).

#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/wrappers.pb.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "metald/base/check.h"
#include "metald/base/status.h"
#include "metald/rpc/call.h"
#include "metald/rpc/internal/engine.h"
#include "metald/rpc/internal/exchange.h"
#include "metald/rpc/internal/session.h"
#include "metald/rpc/metadata.h"
#include "metald/rpc/router.h"

namespace metald::rpc::fuzz {

inline constexpr std::string_view kBarrierPath = "/fuzz-barrier";

// protobuf logs every invalid-UTF-8 string it parses; at fuzzing rates that is pure noise.
inline void SilenceProtobufLogs() { google::protobuf::SetLogHandler(nullptr); }

// The route table every rpc fuzzer serves. Built once; immutable afterwards (Router contract).
//   /test.Echo/Say    unary StringValue → StringValue, nonblocking, GET allowed. A request
//                     value "err:<msg>" fails with invalid_argument <msg> (exercises error
//                     encoding with arbitrary message bytes); "meta:<v>" echoes <v> as a
//                     response header and trailer (metadata encoding).
//   /test.Echo/Count  server streaming, nonblocking: min(len(value), 3) messages, then OK (or
//                     the "err:" status after them).
//   /healthz          plain HTTP route (runs on the pool).
//   /fuzz-barrier     plain HTTP route used by DrainEngine.
inline std::shared_ptr<const rpc::Router> FuzzRouter() {
  static const std::shared_ptr<const rpc::Router> router = [] {
    using google::protobuf::StringValue;
    auto r = std::make_shared<rpc::Router>();
    MethodHandler say;
    say.desc = {"test.Echo",
                "Say",
                "/test.Echo/Say",
                MethodKind::kUnary,
                /*no_side_effects=*/true,
                /*nonblocking=*/true};
    say.request_prototype = &StringValue::default_instance();
    say.response_prototype = &StringValue::default_instance();
    say.unary = [](CallContext& ctx, const google::protobuf::Message& req,
                   google::protobuf::Message& resp) {
      const std::string& v = static_cast<const StringValue&>(req).value();
      if (v.starts_with("err:")) return base::InvalidArgumentError(v.substr(4));
      if (v.starts_with("meta:")) {
        ctx.response_headers().Add("x-echo", v.substr(5));
        ctx.response_trailers().Add("x-echo-trailer", v.substr(5));
      }
      static_cast<StringValue&>(resp).set_value("hello " + v);
      return base::OkStatus();
    };
    METALD_CHECK(r->AddMethod(std::move(say)).ok());

    MethodHandler count;
    count.desc = {"test.Echo",
                  "Count",
                  "/test.Echo/Count",
                  MethodKind::kServerStreaming,
                  /*no_side_effects=*/false,
                  /*nonblocking=*/true};
    count.request_prototype = &StringValue::default_instance();
    count.response_prototype = &StringValue::default_instance();
    count.stream = [](CallContext&, const google::protobuf::Message& req, StreamWriter& writer) {
      const std::string& v = static_cast<const StringValue&>(req).value();
      for (size_t i = 0; i < std::min<size_t>(v.size(), 3); ++i) {
        StringValue msg;
        msg.set_value(v.substr(0, i + 1));
        RETURN_IF_ERROR(writer.Write(msg));
      }
      if (v.starts_with("err:")) return base::ResourceExhaustedError(v.substr(4));
      return base::OkStatus();
    };
    METALD_CHECK(r->AddMethod(std::move(count)).ok());

    METALD_CHECK(r->AddHttpRoute("/healthz", [](const HttpRequest& req) {
                    HttpResponse resp;
                    resp.body = "ok " + req.query;
                    return resp;
                  }).ok());
    METALD_CHECK(r->AddHttpRoute(std::string(kBarrierPath), [](const HttpRequest&) {
                    HttpResponse resp;
                    resp.body = "barrier";
                    return resp;
                  }).ok());
    return r;
  }();
  return router;
}

// One handler thread: route tasks run in the order they were posted (DrainEngine relies on it).
inline std::unique_ptr<internal::Engine> MakeFuzzEngine(size_t max_message_bytes) {
  internal::EngineOptions options;
  options.max_message_bytes = max_message_bytes;
  options.handler_threads = 1;
  return std::make_unique<internal::Engine>(FuzzRouter(), options);
}

inline constexpr size_t kFuzzMaxMessageBytes = 8u << 10;  // small: limit paths are reachable

// The process-wide engine (never destroyed: it is idle between iterations, see above).
inline internal::Engine* FuzzEngine() {
  static internal::Engine* const engine = MakeFuzzEngine(kFuzzMaxMessageBytes).release();
  return engine;
}

// Records one exchange's response and aborts on any breach of the ResponseWriter contract
// (SendHeaders once and first; nothing after end_stream or Finish). Thread-safe.
class RecordingWriter final : public internal::ResponseWriter {
 public:
  void SendHeaders(int status, Metadata headers, bool end_stream) override {
    std::lock_guard lock(mu_);
    METALD_CHECK(!headers_sent_ && !done_);
    METALD_CHECK(status >= 100 && status <= 599);
    headers_sent_ = true;
    status_ = status;
    headers_ = std::move(headers);
    if (end_stream) Done();
  }
  bool SendData(std::string bytes) override {
    std::lock_guard lock(mu_);
    METALD_CHECK(headers_sent_ && !done_);
    body_.append(bytes);
    return true;
  }
  void Finish(Metadata trailers) override {
    std::lock_guard lock(mu_);
    METALD_CHECK(headers_sent_ && !done_);
    trailers_ = std::move(trailers);
    Done();
  }

  // Waits (generously, only to turn a hang into a crash) until the response ended.
  void WaitDone() {
    std::unique_lock lock(mu_);
    METALD_CHECK(cv_.wait_for(lock, std::chrono::seconds(30), [&] { return done_; }));
  }
  // REQUIRES: no thread writes to this writer any more.
  bool done() const {
    std::lock_guard lock(mu_);
    return done_;
  }
  int status() const { return status_; }
  const Metadata& headers() const { return headers_; }
  const std::string& body() const { return body_; }
  const Metadata& trailers() const { return trailers_; }

 private:
  void Done() {
    done_ = true;
    cv_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool headers_sent_ = false;
  bool done_ = false;
  int status_ = 0;
  Metadata headers_;
  std::string body_;
  Metadata trailers_;
};

// Returns once every plain-route task posted to `engine` before this call has run: the barrier
// request goes through the same one-thread FIFO pool.
inline void DrainEngine(internal::Engine* engine) {
  internal::RequestHead head;
  head.method = "GET";
  head.path = std::string(kBarrierPath);
  auto writer = std::make_shared<RecordingWriter>();
  engine->Handle(std::move(head), "", writer, std::make_shared<CancelToken>());
  writer->WaitDone();
}

// The connection side of a session; the fuzzing thread plays the strand.
class FakeHost final : public internal::SessionHost {
 public:
  void WakeWriter() override {}
  bool OnIoThread() const override { return std::this_thread::get_id() == owner_; }
  const std::string& peer() const override { return peer_; }
  bool tls() const override { return false; }

 private:
  const std::thread::id owner_ = std::this_thread::get_id();
  const std::string peer_ = "127.0.0.1:5000";
};

// With METALD_FUZZ_DUMP=1 in the environment, session targets print what the session wrote
// (for checking that a seed reaches the handler: replay it with the fuzzer binary).
inline void MaybeDump(std::string_view out) {
  static const bool dump = std::getenv("METALD_FUZZ_DUMP") != nullptr;
  if (dump) std::fwrite(out.data(), 1, out.size(), stderr);
}

// Splits an input into the reads a socket might deliver, as a pure function of the input so that
// runs are reproducible: whole, byte by byte (short inputs), or fixed chunks of 7 or 133 bytes.
inline std::vector<std::string_view> SplitReads(std::string_view input) {
  uint32_t sum = 0;
  for (unsigned char c : input) sum = sum * 31 + c;
  size_t chunk = input.size();
  switch (sum % 4) {
    case 0:
      break;
    case 1:
      chunk = input.size() <= 512 ? 1 : 64;
      break;
    case 2:
      chunk = 7;
      break;
    default:
      chunk = 133;
      break;
  }
  std::vector<std::string_view> reads;
  if (chunk == 0) chunk = 1;
  for (size_t pos = 0; pos < input.size(); pos += chunk) reads.push_back(input.substr(pos, chunk));
  return reads;
}

// Runs one connection's worth of bytes through a session made by `make` and returns everything
// the session wrote. Mirrors the connection loop (server.cc): OnReadable per read, then
// CollectOutput; stops reading on a session error or once the session wants to close.
template <typename MakeSession>
std::string RunSession(std::string_view input, MakeSession make) {
  internal::SessionLimits limits;
  limits.max_message_bytes = kFuzzMaxMessageBytes;
  limits.max_header_bytes = 8u << 10;
  limits.max_header_count = 32;
  limits.max_concurrent_streams = 8;
  limits.max_pending_bytes_per_exchange = 256u << 10;
  internal::Engine* engine = FuzzEngine();
  FakeHost host;
  std::unique_ptr<internal::Session> session = make(&host, engine, limits);
  std::string out;
  // Collects until quiescent. While the session is busy a route response may still be coming
  // from the pool: drain it and collect again, until a drained round adds nothing (a collect
  // may itself dispatch pipelined requests that were held back).
  auto collect_all = [&] {
    for (int round = 0; round < 64; ++round) {
      size_t before = out.size();
      session->CollectOutput(&out);
      if (!session->Busy() || (round > 0 && out.size() == before)) break;
      DrainEngine(engine);
    }
  };
  for (std::string_view read : SplitReads(input)) {
    if (!session->WantsRead()) collect_all();
    base::Status st = session->OnReadable(read);
    if (!st.ok()) MaybeDump("\n[session error: " + st.message() + "]\n");
    session->CollectOutput(&out);
    if (!st.ok() || session->ShouldClose()) break;
  }
  collect_all();
  (void)session->timer_kind();
  session->BeginShutdown();
  collect_all();
  session->OnClose();
  session.reset();
  // Cancelled calls of this session may still have route tasks queued: let them finish (their
  // writers drop the response) before the next input runs.
  DrainEngine(engine);
  MaybeDump(out);
  return out;
}

}  // namespace metald::rpc::fuzz

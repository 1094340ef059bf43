// The protocol engine: Connect (unary POST/GET, server streaming), gRPC and gRPC-Web over any
// ResponseWriter. Spec: shared/design/connect-protocol.md.
//
// Life of a call:
//   Handle (I/O thread): route → method/Content-Type checks (plain 404/405/415) → protocol
//   checks (version, timeout, compression; answered in-protocol) → register the call, arm the
//   deadline timer → RunCall on the handler pool (inline for nonblocking methods).
//   RunCall: interceptors' OnRequest → decode → handler → Complete (writes the response unless
//   already written) → interceptors' OnComplete with the status the client was sent.
//
// Exactly one response per exchange: Call::finished (guarded by Call::mu) is set by whoever
// writes the final part of the response: the handler's completion, the deadline timer, CancelAll,
// or a StreamWriter that notices cancellation. The timer only try-locks, so it never waits for a
// handler blocked in SendData; that handler's Write finishes the response when SendData returns.
//
// gRPC over HTTP/1.1: served like HTTP/2. ResponseWriter::Finish sends the trailers as chunked
// HTTP/1.1 trailers, and trailers-only responses are a headers-only response. We do not answer
// 505: curl and some proxies speak gRPC over HTTP/1.1 with chunked trailers.

#include "metald/rpc/internal/engine.h"

#include <google/protobuf/arena.h>
#include <google/protobuf/message.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "metald/rpc/wire.h"

namespace metald::rpc::internal {
namespace {

using Clock = std::chrono::steady_clock;

// Responses smaller than this are sent uncompressed even when the client accepts gzip.
constexpr size_t kCompressMinBytes = 1024;

constexpr std::string_view kAcceptPostUnary =
    "application/grpc, application/grpc+json, application/grpc+proto, application/grpc-web, "
    "application/grpc-web+json, application/grpc-web+proto, application/json, application/proto";
constexpr std::string_view kAcceptPostStreaming =
    "application/connect+json, application/connect+proto, application/grpc, "
    "application/grpc+json, application/grpc+proto, application/grpc-web, "
    "application/grpc-web+json, application/grpc-web+proto";

// A response outside any RPC protocol (404, 405, 415, plain HTTP routes).
void SendPlain(ResponseWriter& writer, int status, Metadata headers, std::string body) {
  if (!headers.Has("content-type")) headers.Add("content-type", "text/plain; charset=utf-8");
  writer.SendWhole(status, std::move(headers), std::move(body), {});
}

// Appends the user's fields to *to (names prefixed), dropping protocol headers and fields that
// are not valid on the wire: user metadata can never forge a protocol header.
void AppendUserMetadata(const Metadata& from, std::string_view prefix, Metadata* to) {
  for (const auto& [name, value] : from) {
    if (!wire::IsValidHeaderName(name) || wire::IsReservedHeader(name) ||
        !wire::IsValidHeaderValue(value)) {
      continue;
    }
    to->Add(std::string(prefix) + name, value);
  }
}

// The arena of one call (Call::Run). Its first block is a per-thread buffer, reused call after
// call, so a call whose messages fit in it allocates no arena memory at all; a thread that runs
// a second call while one is active (a handler calling back into the engine inline) gets an
// arena of its own blocks. Thread-compatible: used by the one thread running the call.
class CallArena {
 public:
  CallArena() : arena_(Options(&owns_block_)) {}
  ~CallArena() {
    // Destroys the messages (and frees blocks beyond the first) before the block is released.
    arena_.Reset();
    if (owns_block_) block_in_use_ = false;
  }
  CallArena(const CallArena&) = delete;
  CallArena& operator=(const CallArena&) = delete;

  google::protobuf::Arena* get() { return &arena_; }

 private:
  static constexpr size_t kBlockBytes = 16 << 10;

  static google::protobuf::ArenaOptions Options(bool* owns_block) {
    google::protobuf::ArenaOptions options;
    *owns_block = !block_in_use_;
    if (*owns_block) {
      block_in_use_ = true;
      options.initial_block = block_;
      options.initial_block_size = kBlockBytes;
    }
    return options;
  }

  alignas(16) static thread_local char block_[kBlockBytes];
  static thread_local bool block_in_use_;

  bool owns_block_ = false;  // set by Options, before arena_ is built
  google::protobuf::Arena arena_;
};

alignas(16) thread_local char CallArena::block_[CallArena::kBlockBytes];
thread_local bool CallArena::block_in_use_ = false;

}  // namespace

struct Engine::Impl {
  class Call;

  Impl(std::shared_ptr<const Router> r, EngineOptions o)
      : router(std::move(r)),
        options(o),
        pool(static_cast<size_t>(std::max(1, o.handler_threads))),
        timer_work(boost::asio::make_work_guard(timer_ctx)),
        timer_thread([this] { timer_ctx.run(); }) {}

  ~Impl() {
    // Handlers first. After that no call needs its deadline timer any more, so the timer context
    // is stopped outright: an armed timer with a client-chosen deadline (up to ~115 days) must
    // not hold shutdown hostage.
    pool.join();
    timer_work.reset();
    timer_ctx.stop();
    timer_thread.join();
  }

  void Handle(RequestHead head, std::string body, std::shared_ptr<ResponseWriter> writer,
              std::shared_ptr<CancelToken> cancel);
  void ServeHttpRoute(const HttpHandler* route, RequestHead head, std::string body,
                      std::shared_ptr<ResponseWriter> writer);
  void RejectTooLarge(const RequestHead& head, std::shared_ptr<ResponseWriter> writer);
  void CancelAll(const base::Status& reason);

  // Admits `call` (counted against max_pending_calls and its method's max_concurrency) and
  // tracks it for CancelAll. resource_exhausted when a limit is reached; the call is then not
  // registered and must be finished by the caller.
  base::Status Register(const std::shared_ptr<Call>& call, const MethodDesc& desc);
  void Unregister(uint64_t id);
  void StartTimer(const std::shared_ptr<Call>& call, Clock::time_point deadline);
  void StopTimer(const std::shared_ptr<Call>& call);

  // Constant after construction.
  std::shared_ptr<const Router> router;
  EngineOptions options;

  boost::asio::thread_pool pool;
  // Deadline timers run on their own thread so that a pool full of blocked handlers cannot
  // delay a deadline.
  boost::asio::io_context timer_ctx;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> timer_work;
  std::thread timer_thread;

  std::mutex calls_mu;
  uint64_t next_call_id = 1;                                // guarded by calls_mu
  std::unordered_map<uint64_t, std::weak_ptr<Call>> calls;  // guarded by calls_mu
  // Admitted calls per method with a max_concurrency, and the method of each such call.
  std::unordered_map<const MethodDesc*, int> active_by_method;        // guarded by calls_mu
  std::unordered_map<uint64_t, const MethodDesc*> limited_method_of;  // guarded by calls_mu
};

// One RPC exchange. Shared by the handler task, the deadline timer and the registry.
class Engine::Impl::Call : public std::enable_shared_from_this<Call> {
 public:
  Call(Impl* impl, const MethodHandler* handler, wire::ContentTypeInfo ct,
       std::shared_ptr<ResponseWriter> writer, std::shared_ptr<CancelToken> cancel)
      : impl_(impl),
        handler_(handler),
        ct_(std::move(ct)),
        writer_(std::move(writer)),
        cancel_(std::move(cancel)) {}

  // Set up by Handle before the call is shared with another thread.
  uint64_t id = 0;
  bool is_get = false;
  std::string body;  // raw request body (GET: the message bytes, base64 already undone)
  wire::Compression request_compression = wire::Compression::kIdentity;
  wire::Compression response_compression = wire::Compression::kIdentity;
  std::unique_ptr<CallContext> ctx;
  Clock::time_point start;
  // Touched only on the timer thread.
  std::unique_ptr<boost::asio::steady_timer> timer;

  CancelToken& cancel() { return *cancel_; }
  const wire::ContentTypeInfo& ct() const { return ct_; }
  const MethodHandler& handler() const { return *handler_; }

  // Writes the whole response for a call that never reaches the handler. No-op if finished.
  void FinishEarly(const base::Status& status) {
    std::lock_guard lock(mu_);
    if (!finished_) FinishLocked(status, nullptr, /*user_metadata=*/false);
  }

  // Runs interceptors, decoding and the handler, then answers. On the handler pool (or inline).
  void Run();

  // The token was cancelled by us (deadline, CancelAll): answer now unless a response is being
  // written, in which case its writer finishes (see Write).
  void OnCancelledByEngine(const base::Status& reason) {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock() || finished_) return;
    FinishLocked(reason, nullptr, /*user_metadata=*/false);
  }

  // StreamWriter::Write for server-streaming handlers. Handler thread only.
  base::Status Write(const google::protobuf::Message& message);

 private:
  class StreamWriterImpl final : public StreamWriter {
   public:
    explicit StreamWriterImpl(Call* call) : call_(call) {}
    base::Status Write(const google::protobuf::Message& message) override {
      return call_->Write(message);
    }

   private:
    Call* call_;
  };

  // Ends the call with `status` (the handler's, or the token's reason if cancelled) and returns
  // the status the client was told.
  base::Status Complete(base::Status status, const google::protobuf::Message* response);
  base::Status DecodeRequest(google::protobuf::Message* request);
  void FinishIfCancelled() {
    std::lock_guard lock(mu_);
    if (!finished_ && cancel_->cancelled()) {
      FinishLocked(cancel_->reason(), nullptr, /*user_metadata=*/false);
    }
  }

  // The protocol's own response headers (Content-Type, encodings).
  Metadata ProtocolHeaders() const;
  // REQUIRES: mu_ held, !headers_sent_.
  void SendHeadersLocked(const Metadata* user_headers);
  // Writes the rest of the response and marks the call finished. `message` is the serialized
  // unary response (OK only); it is moved from. When no headers went out yet the response is
  // handed over whole (ResponseWriter::SendWhole). User metadata is read from ctx only on the
  // handler thread.
  // REQUIRES: mu_ held, !finished_.
  void FinishLocked(const base::Status& status, std::string* message, bool user_metadata);

  Impl* const impl_;
  const MethodHandler* const handler_;
  const wire::ContentTypeInfo ct_;
  const std::shared_ptr<ResponseWriter> writer_;
  const std::shared_ptr<CancelToken> cancel_;

  std::mutex mu_;              // serialises every use of writer_
  bool finished_ = false;      // guarded by mu_
  bool headers_sent_ = false;  // guarded by mu_
  base::Status final_status_;  // guarded by mu_
};

Metadata Engine::Impl::Call::ProtocolHeaders() const {
  Metadata h;
  h.Reserve(4);
  const bool compressed = response_compression != wire::Compression::kIdentity;
  switch (ct_.protocol) {
    case Protocol::kConnect:
      if (ct_.enveloped) {
        h.Add("content-type", wire::ContentTypeFor(Protocol::kConnect, ct_.codec, true));
        h.Add("connect-accept-encoding", wire::kAcceptedCompressions);
        if (compressed) {
          h.Add("connect-content-encoding", wire::CompressionName(response_compression));
        }
      } else {
        h.Add("content-type", wire::ContentTypeFor(Protocol::kConnect, ct_.codec, false));
        h.Add("accept-encoding", wire::kAcceptedCompressions);
        if (is_get) h.Add("vary", "Accept-Encoding");
      }
      break;
    case Protocol::kGrpc:
    case Protocol::kGrpcWeb:
      h.Add("content-type", ct_.media_type);
      h.Add("grpc-accept-encoding", wire::kAcceptedCompressions);
      if (compressed) h.Add("grpc-encoding", wire::CompressionName(response_compression));
      break;
  }
  return h;
}

void Engine::Impl::Call::SendHeadersLocked(const Metadata* user_headers) {
  Metadata h = ProtocolHeaders();
  if (user_headers) AppendUserMetadata(*user_headers, "", &h);
  writer_->SendHeaders(200, std::move(h), /*end_stream=*/false);
  headers_sent_ = true;
}

void Engine::Impl::Call::FinishLocked(const base::Status& status, std::string* message,
                                      bool user_metadata) {
  finished_ = true;
  final_status_ = status;
  const Metadata* user_headers = user_metadata && ctx ? &ctx->response_headers() : nullptr;
  const Metadata* user_trailers = user_metadata && ctx ? &ctx->response_trailers() : nullptr;
  const Metadata empty;
  if (!user_trailers) user_trailers = &empty;

  if (ct_.protocol == Protocol::kConnect && !ct_.enveloped) {
    // Connect unary: bare body; errors as JSON; trailers as Trailer-* headers.
    Metadata h;
    std::string body;
    int http_status = 200;
    if (status.ok() && message) {
      h = ProtocolHeaders();
      body = std::move(*message);
      if (response_compression != wire::Compression::kIdentity &&
          body.size() >= kCompressMinBytes) {
        auto compressed = wire::Compress(response_compression, body);
        if (compressed.ok()) {
          body = std::move(compressed).value();
          h.Add("content-encoding", wire::CompressionName(response_compression));
        }
      }
    } else {
      base::Status err = status.ok() ? base::InternalError("Missing response message") : status;
      http_status = wire::HttpStatusForCode(err.code());
      h.Add("content-type", "application/json");
      h.Add("accept-encoding", wire::kAcceptedCompressions);
      if (is_get) h.Add("vary", "Accept-Encoding");
      body = wire::EncodeConnectError(err);
    }
    if (user_headers) AppendUserMetadata(*user_headers, "", &h);
    AppendUserMetadata(*user_trailers, "trailer-", &h);
    writer_->SendWhole(http_status, std::move(h), std::move(body), {});
    headers_sent_ = true;
    return;
  }

  if (ct_.protocol == Protocol::kConnect) {
    // Connect streaming: HTTP 200 always; the end-stream frame carries status and trailers.
    Metadata trailers;
    AppendUserMetadata(*user_trailers, "", &trailers);
    std::string json = wire::EncodeEndStream(status, trailers);
    uint8_t flags = wire::kFlagEndStream;
    if (response_compression != wire::Compression::kIdentity && json.size() >= kCompressMinBytes) {
      auto compressed = wire::Compress(response_compression, json);
      if (compressed.ok()) {
        json = std::move(compressed).value();
        flags |= wire::kFlagCompressed;
      }
    }
    if (!headers_sent_) {
      Metadata h = ProtocolHeaders();
      if (user_headers) AppendUserMetadata(*user_headers, "", &h);
      writer_->SendWhole(200, std::move(h), wire::EncodeEnvelope(flags, json), {});
      headers_sent_ = true;
      return;
    }
    writer_->SendData(wire::EncodeEnvelope(flags, json));
    writer_->Finish({});
    return;
  }

  // gRPC and gRPC-Web. Headers go out first only if a stream already sent them.
  std::string body;
  if (status.ok() && message) {
    std::string payload = std::move(*message);
    uint8_t flags = 0;
    if (response_compression != wire::Compression::kIdentity &&
        payload.size() >= kCompressMinBytes) {
      auto compressed = wire::Compress(response_compression, payload);
      if (compressed.ok()) {
        payload = std::move(compressed).value();
        flags = wire::kFlagCompressed;
      }
    }
    body = wire::EncodeEnvelope(flags, payload);
  }
  Metadata trailers;
  trailers.Add("grpc-status", std::to_string(static_cast<int>(status.code())));
  if (!status.message().empty()) {
    trailers.Add("grpc-message", wire::PercentEncodeGrpcMessage(status.message()));
  }
  AppendUserMetadata(*user_trailers, "", &trailers);
  if (!headers_sent_ && !status.ok()) {
    // Trailers-only: one header block with the status, no body.
    Metadata h = ProtocolHeaders();
    if (user_headers) AppendUserMetadata(*user_headers, "", &h);
    for (const auto& [name, value] : trailers) h.Add(name, value);
    writer_->SendWhole(200, std::move(h), std::string(), Metadata());
    headers_sent_ = true;
    return;
  }
  if (ct_.protocol == Protocol::kGrpcWeb) {
    body += wire::EncodeEnvelope(wire::kFlagGrpcWebTrailers, wire::EncodeGrpcWebTrailers(trailers));
    trailers = Metadata();
  }
  if (!headers_sent_) {
    Metadata h = ProtocolHeaders();
    if (user_headers) AppendUserMetadata(*user_headers, "", &h);
    writer_->SendWhole(200, std::move(h), std::move(body), std::move(trailers));
    headers_sent_ = true;
    return;
  }
  if (!body.empty()) writer_->SendData(std::move(body));
  writer_->Finish(std::move(trailers));
}

base::Status Engine::Impl::Call::DecodeRequest(google::protobuf::Message* request) {
  const size_t max = impl_->options.max_message_bytes;
  std::string payload;
  if (!ct_.enveloped) {
    // Connect unary. An empty body is an empty message and is never decompressed. An
    // uncompressed body is parsed where it lies.
    if (request_compression == wire::Compression::kIdentity || body.empty()) {
      if (body.size() > max) {
        return base::ResourceExhaustedError("Message size " + std::to_string(body.size()) +
                                            " exceeds the limit of " + std::to_string(max) +
                                            " bytes");
      }
      return wire::ParseMessage(ct_.codec, body, request);
    }
    ASSIGN_OR_RETURN(payload, wire::Decompress(request_compression, body, max));
  } else {
    ASSIGN_OR_RETURN(std::vector<wire::Envelope> frames, wire::DecodeEnvelopes(body, max));
    for (const wire::Envelope& f : frames) {
      if ((f.flags & ~wire::kFlagCompressed) != 0) {
        return base::InternalError("Invalid envelope flags " + std::to_string(f.flags));
      }
      if ((f.flags & wire::kFlagCompressed) &&
          request_compression == wire::Compression::kIdentity) {
        return base::InternalError("Received a compressed message without compression support");
      }
    }
    if (frames.empty()) return base::UnimplementedError("Unary request has zero messages");
    if (frames.size() > 1) return base::UnimplementedError("Unary request has multiple messages");
    wire::Envelope& f = frames.front();
    if ((f.flags & wire::kFlagCompressed) && !f.payload.empty()) {
      ASSIGN_OR_RETURN(payload, wire::Decompress(request_compression, f.payload, max));
    } else {
      payload = std::move(f.payload);
    }
  }
  return wire::ParseMessage(ct_.codec, payload, request);
}

base::Status Engine::Impl::Call::Complete(base::Status status,
                                          const google::protobuf::Message* response) {
  std::string message;
  bool have_message = false;
  if (status.ok() && response) {
    auto serialized = wire::SerializeMessage(ct_.codec, *response);
    if (serialized.ok()) {
      message = std::move(serialized).value();
      have_message = true;
    } else {
      status = serialized.status();
    }
  }
  std::lock_guard lock(mu_);
  if (finished_) return final_status_;
  // The first cancellation wins: the client is told its reason, whatever the handler returned.
  if (cancel_->cancelled()) {
    FinishLocked(cancel_->reason(), nullptr, /*user_metadata=*/true);
  } else {
    FinishLocked(status, have_message ? &message : nullptr, /*user_metadata=*/true);
  }
  return final_status_;
}

void Engine::Impl::Call::Run() {
  {
    std::lock_guard lock(mu_);
    // Answered or cancelled while queued (deadline, shutdown, peer gone): neither the
    // interceptors nor the handler run, and the queued body is not decoded.
    if (finished_ || cancel_->cancelled()) {
      if (!finished_) FinishLocked(cancel_->reason(), nullptr, /*user_metadata=*/false);
      if (ctx->deadline()) impl_->StopTimer(shared_from_this());
      impl_->Unregister(id);
      return;
    }
  }
  const auto& interceptors = impl_->router->interceptors();
  base::Status status;
  for (const auto& interceptor : interceptors) {
    try {
      status = interceptor->OnRequest(*ctx);
    } catch (...) {
      status = base::InternalError("Internal error");
    }
    if (!status.ok()) break;
  }
  // The request and response live on a per-call arena: their sub-messages, repeated fields and
  // maps come from one block (the thread's reusable first block when it is free) instead of one
  // allocation each, and are dropped together. Handlers see ordinary messages; protobuf copies
  // where a heap message meets an arena one (Swap, set_allocated_, release_).
  CallArena arena;
  google::protobuf::Message* request = nullptr;
  google::protobuf::Message* response = nullptr;
  if (status.ok()) {
    request = handler_->request_prototype->New(arena.get());
    status = DecodeRequest(request);
  }
  // The raw body (up to max_message_bytes) is not needed once decoded; a long-running handler
  // (a VM boot, a watch stream) must not keep it alive.
  std::string().swap(body);
  if (status.ok() && cancel_->cancelled()) status = cancel_->reason();
  if (status.ok()) {
    try {
      if (handler_->desc.kind == MethodKind::kUnary) {
        response = handler_->response_prototype->New(arena.get());
        status = handler_->unary(*ctx, *request, *response);
      } else {
        StreamWriterImpl stream(this);
        status = handler_->stream(*ctx, *request, stream);
      }
    } catch (...) {
      // Never leak exception text: it may hold internals.
      status = base::InternalError("Internal error");
    }
    if (status.ok() && handler_->desc.kind == MethodKind::kServerStreaming) response = nullptr;
  }
  base::Status sent = Complete(status, status.ok() ? response : nullptr);
  auto elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start);
  for (auto it = interceptors.rbegin(); it != interceptors.rend(); ++it) {
    try {
      (*it)->OnComplete(*ctx, sent, elapsed);
    } catch (...) {
      // An observer's failure must not affect other interceptors or the engine.
    }
  }
  if (ctx->deadline()) impl_->StopTimer(shared_from_this());
  impl_->Unregister(id);
}

base::Status Engine::Impl::Call::Write(const google::protobuf::Message& message) {
  if (cancel_->cancelled()) return cancel_->reason();
  if (message.GetDescriptor() != handler_->response_prototype->GetDescriptor()) {
    return base::InternalError("Stream message has type " + message.GetDescriptor()->full_name() +
                               ", want " +
                               handler_->response_prototype->GetDescriptor()->full_name());
  }
  ASSIGN_OR_RETURN(std::string payload, wire::SerializeMessage(ct_.codec, message));
  uint8_t flags = 0;
  if (response_compression != wire::Compression::kIdentity && payload.size() >= kCompressMinBytes) {
    auto compressed = wire::Compress(response_compression, payload);
    if (compressed.ok()) {
      payload = std::move(compressed).value();
      flags = wire::kFlagCompressed;
    }
  }
  bool sent = false;
  {
    std::lock_guard lock(mu_);
    if (finished_) {
      return cancel_->cancelled() ? cancel_->reason() : base::CancelledError("Call is over");
    }
    if (!headers_sent_) SendHeadersLocked(&ctx->response_headers());
    sent = writer_->SendData(wire::EncodeEnvelope(flags, payload));
  }
  if (cancel_->cancelled()) {
    // The deadline timer may have found mu_ held by this Write and left the answer to us.
    FinishIfCancelled();
    return cancel_->reason();
  }
  if (!sent) return base::CancelledError("The client went away");
  return base::OkStatus();
}

// ---------------------------------------------------------------------------------------------

base::Status Engine::Impl::Register(const std::shared_ptr<Call>& call, const MethodDesc& desc) {
  std::lock_guard lock(calls_mu);
  if (options.max_pending_calls != 0 && calls.size() >= options.max_pending_calls) {
    return base::ResourceExhaustedError("Server overloaded: too many calls in flight");
  }
  if (desc.max_concurrency > 0) {
    int& active = active_by_method[&desc];
    if (active >= desc.max_concurrency) {
      return base::ResourceExhaustedError("Too many concurrent " + desc.method + " calls (limit " +
                                          std::to_string(desc.max_concurrency) + ")");
    }
    ++active;
  }
  call->id = next_call_id++;
  calls.emplace(call->id, call);
  if (desc.max_concurrency > 0) limited_method_of.emplace(call->id, &desc);
  return base::OkStatus();
}

void Engine::Impl::Unregister(uint64_t id) {
  std::lock_guard lock(calls_mu);
  calls.erase(id);
  auto it = limited_method_of.find(id);
  if (it != limited_method_of.end()) {
    if (--active_by_method[it->second] == 0) active_by_method.erase(it->second);
    limited_method_of.erase(it);
  }
}

void Engine::Impl::StartTimer(const std::shared_ptr<Call>& call, Clock::time_point deadline) {
  boost::asio::post(timer_ctx, [this, call, deadline] {
    call->timer = std::make_unique<boost::asio::steady_timer>(timer_ctx, deadline);
    call->timer->async_wait([call](const boost::system::error_code& ec) {
      if (ec) return;  // stopped: the call completed first
      base::Status reason = base::DeadlineExceededError("Deadline exceeded");
      if (call->cancel().Cancel(reason)) call->OnCancelledByEngine(reason);
    });
  });
}

void Engine::Impl::StopTimer(const std::shared_ptr<Call>& call) {
  boost::asio::post(timer_ctx, [call] {
    if (call->timer) call->timer->cancel();
  });
}

void Engine::Impl::CancelAll(const base::Status& reason) {
  std::vector<std::shared_ptr<Call>> live;
  {
    std::lock_guard lock(calls_mu);
    for (auto& [id, weak] : calls) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
  }
  for (auto& c : live) {
    if (c->cancel().Cancel(reason)) c->OnCancelledByEngine(c->cancel().reason());
  }
}

void Engine::Impl::ServeHttpRoute(const HttpHandler* route, RequestHead head, std::string body,
                                  std::shared_ptr<ResponseWriter> writer) {
  if (head.method != "GET" && head.method != "HEAD") {
    SendPlain(*writer, 405, Metadata{{"allow", "GET, HEAD"}}, "");
    return;
  }
  boost::asio::post(pool, [route, head = std::move(head), body = std::move(body),
                           writer = std::move(writer)]() mutable {
    HttpResponse resp;
    try {
      HttpRequest req{head.method, head.path, head.query, head.headers, std::move(body)};
      resp = (*route)(req);
    } catch (...) {
      resp = HttpResponse{};
      resp.status = 500;
      resp.body = "Internal error\n";
    }
    Metadata headers = std::move(resp.headers);
    headers.Set("content-type", resp.content_type);
    if (head.method == "HEAD") resp.body.clear();
    SendPlain(*writer, resp.status, std::move(headers), std::move(resp.body));
  });
}

void Engine::Impl::Handle(RequestHead head, std::string body,
                          std::shared_ptr<ResponseWriter> writer,
                          std::shared_ptr<CancelToken> cancel) {
  const Clock::time_point start = Clock::now();
  if (!cancel) cancel = std::make_shared<CancelToken>();
  const MethodHandler* mh = router->FindMethod(head.path);
  std::optional<std::string_view> content_type = head.headers.Get("content-type");
  std::optional<wire::ContentTypeInfo> ct;
  if (content_type) ct = wire::ClassifyContentType(*content_type);

  if (!mh) {
    if (const HttpHandler* route = router->FindHttpRoute(head.path)) {
      ServeHttpRoute(route, std::move(head), std::move(body), std::move(writer));
      return;
    }
    if (head.method == "POST" && ct && ct->protocol != Protocol::kConnect) {
      // gRPC clients expect a status, not an HTTP error.
      auto call = std::make_shared<Call>(this, nullptr, *ct, writer, cancel);
      call->FinishEarly(base::UnimplementedError("Unknown method " + head.path));
      return;
    }
    SendPlain(*writer, 404, {}, "404 page not found\n");
    return;
  }

  const MethodDesc& desc = mh->desc;
  const bool unary = desc.kind == MethodKind::kUnary;
  const bool get_allowed = unary && desc.no_side_effects;
  const bool is_get = head.method == "GET";
  if (head.method != "POST" && !(is_get && get_allowed)) {
    SendPlain(*writer, 405, Metadata{{"allow", get_allowed ? "GET, POST" : "POST"}}, "");
    return;
  }
  const std::string_view accept_post = unary ? kAcceptPostUnary : kAcceptPostStreaming;

  std::shared_ptr<Call> call;
  std::optional<std::string> request_encoding;  // as named by the client
  std::optional<std::string_view> accept_encoding;
  base::Status early;  // a protocol error answered before any interceptor runs

  if (is_get) {
    if (!body.empty()) {
      SendPlain(*writer, 415, {}, "");
      return;
    }
    wire::ContentTypeInfo info;
    info.protocol = Protocol::kConnect;
    info.codec = Codec::kJson;
    info.enveloped = false;
    auto query = wire::ParseConnectGetQuery(head.query);
    if (query.ok() && query->encoding && !wire::ParseCodecName(*query->encoding)) {
      SendPlain(*writer, 415, {}, "");
      return;
    }
    if (query.ok() && query->encoding) info.codec = *wire::ParseCodecName(*query->encoding);
    info.media_type = std::string(wire::ContentTypeFor(Protocol::kConnect, info.codec, false));
    call = std::make_shared<Call>(this, mh, info, writer, cancel);
    call->is_get = true;
    if (!query.ok()) {
      early = query.status();
    } else if (!query->encoding) {
      early = base::InvalidArgumentError("Missing encoding query parameter");
    } else if (!query->message) {
      early = base::InvalidArgumentError("Missing message query parameter");
    } else if (query->connect && *query->connect != "v1") {
      early = base::InvalidArgumentError("Unsupported connect query parameter \"" +
                                         *query->connect + "\": want v1");
    } else if (query->base64) {
      auto decoded = wire::Base64Decode(*query->message, wire::Base64Alphabet::kUrl);
      if (decoded.ok()) {
        call->body = std::move(decoded).value();
      } else {
        early = base::InvalidArgumentError("Invalid base64 in message query parameter");
      }
    } else {
      call->body = std::move(*query->message);
    }
    if (query.ok() && query->compression) request_encoding = *query->compression;
    accept_encoding = head.headers.Get("accept-encoding");
  } else {
    if (!ct || (ct->protocol == Protocol::kConnect && ct->enveloped == unary)) {
      SendPlain(*writer, 415, Metadata{{"accept-post", std::string(accept_post)}}, "");
      return;
    }
    // Moving *ct leaves its protocol, codec and enveloped flag intact (only media_type moves).
    call = std::make_shared<Call>(this, mh, std::move(*ct), writer, cancel);
    call->body = std::move(body);
    const char* encoding_header = "grpc-encoding";
    const char* accept_header = "grpc-accept-encoding";
    if (ct->protocol == Protocol::kConnect) {
      encoding_header = ct->enveloped ? "connect-content-encoding" : "content-encoding";
      accept_header = ct->enveloped ? "connect-accept-encoding" : "accept-encoding";
      if (auto v = head.headers.Get("connect-protocol-version"); v && *v != "1") {
        early = base::InvalidArgumentError("Unsupported Connect-Protocol-Version \"" +
                                           std::string(*v) + "\": want 1");
      }
    }
    if (auto v = head.headers.Get(encoding_header)) request_encoding = std::string(*v);
    accept_encoding = head.headers.Get(accept_header);
  }

  // Compression: unknown request encodings are refused; the response follows connect-go's rules.
  if (request_encoding) {
    auto c = wire::ParseCompression(*request_encoding);
    if (c) {
      call->request_compression = *c;
    } else if (early.ok()) {
      early = wire::UnsupportedCompressionError(*request_encoding);
    }
  }
  call->response_compression =
      wire::NegotiateCompression(call->request_compression, accept_encoding);

  // Deadline.
  std::optional<Clock::time_point> deadline;
  if (early.ok()) {
    const bool connect = call->is_get || (ct && ct->protocol == Protocol::kConnect);
    if (connect) {
      if (auto v = head.headers.Get("connect-timeout-ms")) {
        auto t = wire::ParseConnectTimeout(*v);
        if (t.ok()) {
          deadline = start + *t;
        } else {
          early = t.status();
        }
      }
    } else if (auto v = head.headers.Get("grpc-timeout")) {
      auto t = wire::ParseGrpcTimeout(*v);
      if (t.ok()) {
        // Saturate: a huge timeout must not overflow the clock.
        auto room = Clock::time_point::max() - start;
        deadline = *t >= room ? Clock::time_point::max()
                              : start + std::chrono::duration_cast<Clock::duration>(*t);
      } else {
        early = t.status();
      }
    }
  }
  if (!early.ok()) {
    call->FinishEarly(early);
    return;
  }
  if (deadline && *deadline <= start) {
    cancel->Cancel(base::DeadlineExceededError("Deadline exceeded"));
    call->FinishEarly(cancel->reason());
    return;
  }

  call->start = start;
  call->ctx = std::make_unique<CallContext>(desc, call->ct().protocol, call->ct().codec,
                                            std::move(head.headers), std::move(head.peer), deadline,
                                            cancel);
  if (base::Status admitted = Register(call, desc); !admitted.ok()) {
    call->FinishEarly(admitted);
    return;
  }
  if (deadline) StartTimer(call, *deadline);
  if (desc.nonblocking) {
    call->Run();
  } else {
    boost::asio::post(pool, [call] { call->Run(); });
  }
}

void Engine::Impl::RejectTooLarge(const RequestHead& head, std::shared_ptr<ResponseWriter> writer) {
  std::optional<wire::ContentTypeInfo> ct;
  if (auto v = head.headers.Get("content-type")) ct = wire::ClassifyContentType(*v);
  if (!ct) {
    SendPlain(*writer, 413, {}, "");
    return;
  }
  auto call = std::make_shared<Call>(this, nullptr, *ct, std::move(writer),
                                     std::make_shared<CancelToken>());
  call->FinishEarly(base::ResourceExhaustedError(
      "Request exceeds the limit of " + std::to_string(options.max_message_bytes) + " bytes"));
}

// ---------------------------------------------------------------------------------------------

Engine::Engine(std::shared_ptr<const Router> router, EngineOptions options)
    : options_(options), impl_(std::make_unique<Impl>(std::move(router), options)) {}

Engine::~Engine() = default;

void Engine::Handle(RequestHead head, std::string body, std::shared_ptr<ResponseWriter> writer,
                    std::shared_ptr<CancelToken> cancel) {
  impl_->Handle(std::move(head), std::move(body), std::move(writer), std::move(cancel));
}

void Engine::RejectTooLarge(RequestHead head, std::shared_ptr<ResponseWriter> writer) {
  impl_->RejectTooLarge(head, std::move(writer));
}

void Engine::CancelAll(base::Status reason) { impl_->CancelAll(reason); }

}  // namespace metald::rpc::internal

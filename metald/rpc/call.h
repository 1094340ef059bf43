#pragma once
// The server-side view of one RPC: what a handler and the interceptors see. Transport-neutral:
// the same CallContext is built for Connect, gRPC and gRPC-Web over HTTP/1.1 or HTTP/2.
//
// Threading: the engine runs each handler on the handler pool (or inline on the I/O thread for
// methods marked nonblocking). A CallContext is used by one handler thread at a time; only its
// CancelToken is shared with the transport and the deadline timer, and that is thread-safe.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <typeindex>
#include <unordered_map>

#include "metald/base/status.h"
#include "metald/rpc/metadata.h"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace metald::rpc {

enum class Protocol { kConnect, kGrpc, kGrpcWeb };
enum class Codec { kProto, kJson };
enum class MethodKind { kUnary, kServerStreaming };

std::string_view ProtocolName(Protocol p);  // "connect", "grpc", "grpc-web"

struct MethodDesc {
  std::string service;  // fully qualified: "metald.v1.VmService"
  std::string method;   // "CreateVm"
  std::string path;     // "/metald.v1.VmService/CreateVm"
  MethodKind kind = MethodKind::kUnary;
  // option idempotency_level = NO_SIDE_EFFECTS: Connect GET is allowed.
  bool no_side_effects = false;
  // The handler never blocks: the engine may run it on the I/O thread, skipping the hop to the
  // handler pool.
  bool nonblocking = false;
  // Most calls of this method admitted at once (queued or running); more are refused at once
  // with resource_exhausted instead of being queued. Bounds how many handler threads a
  // long-running method (a watch, a long poll) can hold, so it cannot starve the others.
  // 0 = no per-method limit (the server's max_pending_calls still applies).
  int max_concurrency = 0;
};

// Cancellation of one call, shared by the transport (peer reset or gone), the deadline timer and
// the handler. Thread-safe. The first Cancel wins; its reason is what the client is told.
class CancelToken {
 public:
  bool cancelled() const;
  // canceled or deadline_exceeded; OK while not cancelled.
  base::Status reason() const;
  // Returns true if this call did the cancelling. Runs registered callbacks on this thread.
  bool Cancel(base::Status reason);
  // Runs fn once when cancelled (at once, on this thread, if already cancelled). Returns a handle
  // for RemoveCallback. fn must not call back into this token.
  uint64_t OnCancel(std::function<void()> fn);
  void RemoveCallback(uint64_t handle);
  // Blocks until cancelled or `timeout` passes; returns cancelled().
  bool WaitFor(std::chrono::nanoseconds timeout) const;

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool cancelled_ = false;  // guarded by mu_
  // A copy of cancelled_ for cancelled(), which every call checks several times: set (release)
  // under mu_ together with cancelled_ and reason_, so a reader that sees true also sees the
  // reason through reason().
  std::atomic<bool> cancelled_fast_{false};
  base::Status reason_;                                  // guarded by mu_
  uint64_t next_handle_ = 1;                             // guarded by mu_
  std::map<uint64_t, std::function<void()>> callbacks_;  // guarded by mu_
};

class CallContext {
 public:
  using Clock = std::chrono::steady_clock;

  CallContext(const MethodDesc& method, Protocol protocol, Codec codec, Metadata request_headers,
              std::string peer, std::optional<Clock::time_point> deadline,
              std::shared_ptr<CancelToken> cancel);

  const MethodDesc& method() const { return *method_; }
  Protocol protocol() const { return protocol_; }
  Codec codec() const { return codec_; }
  const Metadata& request_headers() const { return request_headers_; }
  // "127.0.0.1:5000", "[::1]:5000" or "unix".
  const std::string& peer() const { return peer_; }
  std::optional<Clock::time_point> deadline() const { return deadline_; }

  // Sent with the response headers. REQUIRES: before the first message is written (streaming)
  // or before the handler returns (unary).
  Metadata& response_headers() { return response_headers_; }
  // Sent at the end of the call (HTTP/2 trailers, Connect end-stream metadata, Trailer-* headers
  // for Connect unary, the gRPC-Web trailer frame).
  Metadata& response_trailers() { return response_trailers_; }

  bool cancelled() const { return cancel_->cancelled(); }
  CancelToken& cancel_token() { return *cancel_; }
  std::shared_ptr<CancelToken> shared_cancel_token() const { return cancel_; }

  // Typed per-call values that interceptors attach (for example the authenticated principal).
  // REQUIRES: set before the handler runs; read afterwards.
  template <typename T>
  void SetValue(std::shared_ptr<const T> value) {
    values_[std::type_index(typeid(T))] = std::move(value);
  }
  template <typename T>
  const T* GetValue() const {
    auto it = values_.find(std::type_index(typeid(T)));
    return it == values_.end() ? nullptr : static_cast<const T*>(it->second.get());
  }

 private:
  const MethodDesc* method_;  // owned by the Router, which outlives every call
  Protocol protocol_;
  Codec codec_;
  Metadata request_headers_;
  std::string peer_;
  std::optional<Clock::time_point> deadline_;
  std::shared_ptr<CancelToken> cancel_;
  Metadata response_headers_;
  Metadata response_trailers_;
  std::unordered_map<std::type_index, std::shared_ptr<const void>> values_;
};

// Where a server-streaming handler writes its messages.
class StreamWriter {
 public:
  virtual ~StreamWriter() = default;
  // Sends one message (the first call also sends the response headers). May block while the peer
  // reads slowly. Returns non-OK once the call is over (cancelled, deadline passed, peer gone);
  // the handler should then return promptly.
  virtual base::Status Write(const google::protobuf::Message& message) = 0;
};

// The typed face of StreamWriter that generated handler interfaces use.
template <typename T>
class TypedStreamWriter {
 public:
  explicit TypedStreamWriter(StreamWriter& writer) : writer_(writer) {}
  base::Status Write(const T& message) { return writer_.Write(message); }

 private:
  StreamWriter& writer_;
};

using UnaryHandler =
    std::function<base::Status(CallContext& ctx, const google::protobuf::Message& request,
                               google::protobuf::Message& response)>;
using ServerStreamHandler = std::function<base::Status(
    CallContext& ctx, const google::protobuf::Message& request, StreamWriter& writer)>;

// One routable RPC. Generated code (protoc-gen-metald) builds these.
struct MethodHandler {
  MethodDesc desc;
  // Default instances, not owned (protobuf's generated default instances live forever).
  const google::protobuf::Message* request_prototype = nullptr;
  const google::protobuf::Message* response_prototype = nullptr;
  UnaryHandler unary;          // set iff desc.kind == kUnary
  ServerStreamHandler stream;  // set iff desc.kind == kServerStreaming
};

// A link in the chain that runs around every RPC (authentication, metrics, tracing). Interceptors
// run in the order added to the Router. Implementations must be thread-safe: many calls run at
// once.
class Interceptor {
 public:
  virtual ~Interceptor() = default;
  // Before the request message is decoded. A non-OK status ends the call with that status; the
  // handler and later interceptors' OnRequest do not run.
  virtual base::Status OnRequest(CallContext& ctx) {
    (void)ctx;
    return base::OkStatus();
  }
  // Once per call that reached OnRequest, after it ended, with the status the client was sent.
  virtual void OnComplete(const CallContext& ctx, const base::Status& status,
                          std::chrono::nanoseconds elapsed) {
    (void)ctx;
    (void)status;
    (void)elapsed;
  }
};

}  // namespace metald::rpc

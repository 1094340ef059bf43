#pragma once
// Engine: the protocol half of the server. Given a whole request (head + body) it picks the
// protocol from the Content-Type (Connect unary/streaming, gRPC, gRPC-Web) or a plain HTTP route,
// runs the interceptors and the handler, and writes the response through a ResponseWriter.
// It knows no sockets; transports know no protocols. Private to metald/rpc.
//
// Threading: Handle may be called from any I/O thread. Handlers run on the engine's handler pool
// (or inline for nonblocking methods). Deadline timers run on a thread of their own, so a pool
// full of blocked handlers cannot delay a deadline answer.

#include <chrono>
#include <memory>
#include <string>

#include "metald/rpc/call.h"
#include "metald/rpc/internal/exchange.h"
#include "metald/rpc/router.h"

namespace metald::rpc::internal {

struct EngineOptions {
  size_t max_message_bytes = 4u << 20;  // decompressed request message limit
  int handler_threads = 16;
  // Calls admitted at once (queued for or running on the handler pool, or inline); more are
  // answered with resource_exhausted at once. 0 = unlimited.
  size_t max_pending_calls = 4096;
};

class Engine {
 public:
  Engine(std::shared_ptr<const Router> router, EngineOptions options);
  ~Engine();  // waits for running handlers
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Serves one exchange. `body` is the whole request body as received (still compressed if it
  // was). `cancel` is cancelled by the transport when the peer goes away; the engine cancels it
  // when the deadline passes. Returns at once; the response may be written later, from another
  // thread.
  void Handle(RequestHead head, std::string body, std::shared_ptr<ResponseWriter> writer,
              std::shared_ptr<CancelToken> cancel);

  // The transport stopped reading a request body larger than the limit: answer with
  // resource_exhausted in the request's protocol.
  void RejectTooLarge(RequestHead head, std::shared_ptr<ResponseWriter> writer);

  // Cancels every call in flight with `reason` (server shutdown).
  void CancelAll(base::Status reason);

  size_t max_message_bytes() const { return options_.max_message_bytes; }

 private:
  struct Impl;
  EngineOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace metald::rpc::internal

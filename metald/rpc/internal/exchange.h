#pragma once
// The seam between transports (HTTP/1.1 on Beast, HTTP/2 on nghttp2) and the protocol engine
// (Connect, gRPC, gRPC-Web). A transport reads one request, hands it to Engine::Handle with a
// ResponseWriter for the response, and cancels the call's CancelToken when the peer goes away.
// Private to metald/rpc.

#include <memory>
#include <string>
#include <utility>

#include "metald/rpc/call.h"
#include "metald/rpc/metadata.h"

namespace metald::rpc::internal {

enum class HttpVersion { kHttp1, kHttp2 };

struct RequestHead {
  std::string method;  // "POST", "GET", ...
  std::string path;    // without the query
  std::string query;   // raw, without '?'
  Metadata headers;    // lower-case names; HTTP/2 pseudo-headers removed (":authority" → "host")
  HttpVersion version = HttpVersion::kHttp1;
  std::string peer;  // "127.0.0.1:5000", "[::1]:5000" or "unix"
  bool tls = false;
};

// The response half of one exchange, implemented by each transport.
//
// Contract: the engine calls SendHeaders exactly once, then SendData zero or more times, then
// Finish exactly once — unless SendHeaders was called with end_stream, which ends the exchange.
// Every method is thread-safe and may be called from a handler thread or from the transport's
// I/O thread. SendData may block a handler thread while the transport's send buffer is full
// (backpressure); it never blocks when called on the transport's own I/O thread.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  virtual void SendHeaders(int status, Metadata headers, bool end_stream) = 0;
  // Queues body bytes and flushes them to the peer promptly (server streaming relies on this).
  // Returns false when the exchange is gone (stream reset, connection closed).
  virtual bool SendData(std::string bytes) = 0;
  // Ends the response. Non-empty trailers are sent as HTTP trailers (HTTP/2; HTTP/1.1 as
  // chunked trailers). Connect and gRPC-Web never pass trailers.
  virtual void Finish(Metadata trailers) = 0;
  // A complete response in one call, instead of SendHeaders, SendData and Finish; the same
  // exactly-once contract applies (it replaces all three). A transport that overrides it hands
  // the response to its collector atomically, so HTTP/1.1 can frame it with Content-Length
  // (unless non-empty trailers force chunked). An empty body with no trailers is a headers-only
  // response. The default forwards to the three calls.
  virtual void SendWhole(int status, Metadata headers, std::string body, Metadata trailers) {
    if (body.empty() && trailers.empty()) {
      SendHeaders(status, std::move(headers), /*end_stream=*/true);
      return;
    }
    SendHeaders(status, std::move(headers), /*end_stream=*/false);
    if (!body.empty()) SendData(std::move(body));
    Finish(std::move(trailers));
  }
};

}  // namespace metald::rpc::internal

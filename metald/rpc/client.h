#pragma once
// Client: a Connect protocol client (unary and server streaming, proto or JSON codec) over
// HTTP/1.1 or HTTP/2 with prior knowledge (h2c), to a TCP address or a unix socket. Used by
// metalctl, billing and tests.
//
// Thread-safety: a Client may be shared by threads; each call uses its own connection from a
// small pool of keep-alive connections (up to 4 idle), for HTTP/1.1 and h2c alike: h2c
// connections carry one call at a time (no multiplexing yet).

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "metald/base/status.h"
#include "metald/rpc/call.h"
#include "metald/rpc/metadata.h"

namespace metald::rpc {

struct ClientOptions {
  // "http://127.0.0.1:8080", "127.0.0.1:8080", "[::1]:8080" or "unix:/run/metald.sock".
  std::string target;
  enum class Transport { kHttp1, kH2c };
  Transport transport = Transport::kHttp1;
  Codec codec = Codec::kProto;
  // Sent with every call (for example "authorization: Bearer ...").
  Metadata headers;
  // Compress request bodies with gzip and ask for gzip responses.
  bool gzip = false;
  // Connect timeout.
  std::chrono::milliseconds connect_timeout{5'000};
};

struct CallOptions {
  // Call deadline, sent as Connect-Timeout-Ms; zero: none.
  std::chrono::milliseconds timeout{0};
  // Extra request headers for this call.
  Metadata headers;
  // When set, receives the response headers and trailers (trailers as Connect reports them).
  Metadata* response_headers = nullptr;
  Metadata* response_trailers = nullptr;
};

class Client {
 public:
  // invalid_argument for a malformed target. Does not connect yet.
  static base::Result<std::unique_ptr<Client>> Create(ClientOptions options);
  virtual ~Client() = default;

  // Calls a unary method ("/pkg.Service/Method"). On success fills *response. Errors are the
  // server's Connect error (code and message), or unavailable when the server cannot be reached,
  // or deadline_exceeded.
  virtual base::Status Unary(std::string_view path, const google::protobuf::Message& request,
                             google::protobuf::Message* response,
                             const CallOptions& options = {}) = 0;

  // Calls a server-streaming method. `on_message` gets each message in a scratch message of the
  // response's type; returning false cancels the stream (the call then returns OK). Returns the
  // stream's final status.
  virtual base::Status ServerStream(
      std::string_view path, const google::protobuf::Message& request,
      const google::protobuf::Message& response_prototype,
      const std::function<bool(const google::protobuf::Message&)>& on_message,
      const CallOptions& options = {}) = 0;
};

}  // namespace metald::rpc

#pragma once
// Server: serves a Router's RPCs over Connect (JSON and proto, unary and server streaming), gRPC
// and gRPC-Web, on HTTP/1.1 and HTTP/2 (h2c with prior knowledge, or h2 via TLS ALPN), all on
// every listener, TCP or unix socket, like a connect-go server.
//
// Threading: `io_threads` Asio threads run every socket; handlers run on a pool of
// `handler_threads` (or inline on the I/O thread when the method is marked nonblocking).
// Start/Shutdown are called from one owner thread; addresses() is safe from any thread.

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "metald/base/status.h"
#include "metald/rpc/router.h"

namespace metald::rpc {

struct TlsOptions {
  std::string cert_file;       // PEM certificate chain
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // PEM CAs for client certificates; empty: no client certs asked
  bool require_client_cert = false;  // mTLS: refuse a handshake without a valid client cert
};

struct ServerOptions {
  // Addresses to listen on: "127.0.0.1:8080", "[::1]:0", "0.0.0.0:8080" or "unix:/path/to.sock".
  // Port 0 picks a free port (see Server::addresses()). A unix socket path is unlinked first.
  std::vector<std::string> listen;
  // TLS for TCP listeners (unix sockets stay plain). Default: none.
  std::optional<TlsOptions> tls;
  // Largest request message after decompression; larger is resource_exhausted. Default 4 MiB.
  size_t max_message_bytes = 4u << 20;
  // Largest header block and most header fields a request may carry. Default 64 KiB / 100.
  size_t max_header_bytes = 64u << 10;
  size_t max_header_count = 100;
  // A request (head and body) must arrive whole within this, or the connection is closed.
  std::chrono::milliseconds read_timeout{30'000};
  // A connection with no request in flight is closed after this.
  std::chrono::milliseconds idle_timeout{120'000};
  // Concurrent HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS). Default 100.
  unsigned max_concurrent_streams = 100;
  // A handler blocked this long writing to a peer that does not read (full socket buffer,
  // closed HTTP/2 window) has its write failed, so a stalled client cannot hold a handler thread.
  std::chrono::milliseconds write_stall_timeout{60'000};
  // Most open connections over all listeners; a connection beyond it is closed at once.
  // 0 = unlimited. Default 4096.
  size_t max_connections = 4096;
  // Most calls admitted at once (queued for or running on the handler pool); more are answered
  // with resource_exhausted at once instead of queueing without bound. 0 = unlimited.
  // Default 4096. See also MethodDesc::max_concurrency.
  size_t max_pending_calls = 4096;
  // Threads for sockets and for (blocking) handlers.
  int io_threads = 1;
  int handler_threads = 16;
};

class Server {
 public:
  // Binds every listener and starts serving. invalid_argument for a malformed address or TLS
  // file, unavailable when an address cannot be bound. The router must outlive the server.
  static base::Result<std::unique_ptr<Server>> Start(ServerOptions options,
                                                     std::shared_ptr<const Router> router);
  virtual ~Server() = default;

  // Bound addresses in listen order, with port 0 resolved: "127.0.0.1:43123", "unix:/path".
  virtual std::vector<std::string> addresses() const = 0;
  // Stops accepting, lets in-flight calls finish for `grace`, then cancels them, closes every
  // connection and joins all threads. Idempotent; the destructor calls it with zero grace.
  virtual void Shutdown(std::chrono::milliseconds grace) = 0;
};

}  // namespace metald::rpc

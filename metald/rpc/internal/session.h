#pragma once
// A protocol session turns the bytes of one connection into exchanges for the Engine and the
// Engine's responses back into bytes. It owns no socket, which keeps it testable and fuzzable
// (feed bytes, read bytes). The connection (server.cc) owns the socket, TLS, timers and the
// read/write loops, and drives its session on the connection's strand. Private to metald/rpc.
//
//   socket --read--> Session::OnReadable --> Engine::Handle --> handler thread
//   socket <--write-- Session::CollectOutput <-- ResponseWriter (from any thread) + WakeWriter

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "metald/base/status.h"
#include "metald/rpc/internal/engine.h"

namespace metald::rpc::internal {

// Implemented by the connection. Thread-safe unless noted.
class SessionHost {
 public:
  virtual ~SessionHost() = default;
  // Asks the connection to call CollectOutput soon, on its strand. Cheap and idempotent; callable
  // from any thread, including from inside Session methods.
  virtual void WakeWriter() = 0;
  // True when the caller runs on this connection's strand (ResponseWriters must not block there).
  virtual bool OnIoThread() const = 0;
  // "127.0.0.1:5000", "[::1]:5000" or "unix". Constant.
  virtual const std::string& peer() const = 0;
  // Whether the connection is TLS. Constant.
  virtual bool tls() const = 0;
};

struct SessionLimits {
  size_t max_message_bytes = 4u << 20;  // request body limit (raw); the engine checks decompressed
  size_t max_header_bytes = 64u << 10;
  size_t max_header_count = 100;
  unsigned max_concurrent_streams = 100;  // HTTP/2 only
  // A handler's SendData blocks while more than this many bytes of its exchange wait to be sent.
  size_t max_pending_bytes_per_exchange = 1u << 20;
  // A handler blocked that long by a peer that does not read (full TCP buffer or HTTP/2 flow
  // control window) gets a failed write instead of waiting for ever, so a stalled client cannot
  // hold a handler thread.
  std::chrono::milliseconds write_stall_timeout{60'000};
};

// REQUIRES (every method): called on the connection's strand, never concurrently.
class Session {
 public:
  virtual ~Session() = default;
  // Consumes bytes from the peer (any split). A non-OK status means the peer broke the protocol
  // or a limit: the connection flushes what CollectOutput still yields (an error response, a
  // GOAWAY) and closes.
  virtual base::Status OnReadable(std::string_view bytes) = 0;
  // Appends every byte ready to send to *out (may append nothing).
  virtual void CollectOutput(std::string* out) = 0;
  // True once the session wants the connection closed after its output is flushed
  // (HTTP/1.1 "Connection: close", HTTP/2 GOAWAY sent and no stream left).
  virtual bool ShouldClose() const = 0;
  // True while a request is partly read or a response is not yet fully collected: the
  // connection applies the read timeout then, the idle timeout otherwise.
  virtual bool Busy() const = 0;
  // The connection is gone (peer closed, timeout, error): cancel every call still running.
  // After this, ResponseWriters of this session drop what they are given and return false.
  virtual void OnClose() = 0;
  // Graceful shutdown: finish calls in flight, accept no new ones (HTTP/2 GOAWAY, HTTP/1.1
  // "Connection: close" on the next response).
  virtual void BeginShutdown() = 0;

  // Which timer the connection runs (ServerOptions): kRead while a request is partly received
  // (the whole request must arrive within read_timeout, counted from its first byte); kNone
  // while only responses are in progress (a long server stream must not be cut by a socket
  // timer: the call's deadline and the peer bound it); kIdle when nothing is in flight.
  // Default: kRead while Busy(), kIdle otherwise.
  enum class TimerKind { kRead, kNone, kIdle };
  virtual TimerKind timer_kind() const { return Busy() ? TimerKind::kRead : TimerKind::kIdle; }
  // False asks the connection to stop reading for now (the session holds enough input it cannot
  // process yet, e.g. too many pipelined requests); the connection asks again after every
  // CollectOutput. Default: always true.
  virtual bool WantsRead() const { return true; }
};

// HTTP/1.1 (Beast parser, our own serializer). Keep-alive and pipelining in order.
std::unique_ptr<Session> MakeHttp1Session(SessionHost* host, Engine* engine, SessionLimits limits);
// HTTP/2 server (nghttp2), for h2c with prior knowledge and for h2 after TLS ALPN. The client
// connection preface is expected as the session's first bytes.
std::unique_ptr<Session> MakeHttp2Session(SessionHost* host, Engine* engine, SessionLimits limits);

}  // namespace metald::rpc::internal

// Connect client (client.h). Layout:
//   Target / Socket: address parsing and a blocking-with-deadline socket (poll + non-blocking
//     fd), so every read and write is bounded by the call's deadline.
//   Http1Conn: HTTP/1.1 exchanges with Beast's parser/serializer over that socket (Beast sync
//     I/O through BeastSyncStream); keep-alive connections are pooled.
//   H2Conn: an nghttp2 client session driven over the same socket (h2c with prior knowledge);
//     pooled too, one call at a time per connection.
//   ClientImpl: the Connect protocol (unary and server streaming) over either transport's
//     RoundTrip, with the wire codecs of metald/rpc/wire.h.

#include "metald/rpc/client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <google/protobuf/message.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <vector>

#include "metald/rpc/wire.h"

namespace metald::rpc {
namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;
using Deadline = std::optional<Clock::time_point>;

// Largest response message accepted after decompression.
constexpr size_t kMaxResponseBytes = 64u << 20;
// Idle connections kept per transport.
constexpr size_t kMaxIdleConnections = 4;
// The client's own deadline trails the server's (Connect-Timeout-Ms) by this much, so that the
// server's deadline_exceeded answer, with its metadata, normally arrives first.
constexpr std::chrono::milliseconds kDeadlineGrace{200};
constexpr std::string_view kUserAgent = "metald-rpc-client/1";

// ---------------------------------------------------------------------------------------------
// Target.

struct Target {
  bool unix_socket = false;
  std::string path;  // unix socket path
  std::string host;  // without brackets
  std::string port;
  std::string authority;  // Host / :authority
  std::string display;    // for error messages
};

base::Result<Target> ParseTarget(std::string_view text) {
  Target t;
  t.display = std::string(text);
  if (text.starts_with("unix:")) {
    t.unix_socket = true;
    t.path = std::string(text.substr(5));
    if (t.path.empty()) return base::InvalidArgumentError("Empty unix socket path in target");
    if (t.path.size() >= sizeof(sockaddr_un::sun_path)) {
      return base::InvalidArgumentError("Unix socket path too long: " + t.path);
    }
    t.authority = "localhost";
    return t;
  }
  if (text.starts_with("https://")) {
    return base::InvalidArgumentError("TLS targets are not supported: " + t.display);
  }
  if (text.starts_with("http://")) text.remove_prefix(7);
  while (text.ends_with('/')) text.remove_suffix(1);
  std::string_view port;
  if (text.starts_with('[')) {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return base::InvalidArgumentError("Malformed target: " + t.display);
    }
    t.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return base::InvalidArgumentError("Target needs host:port: " + t.display);
    }
    t.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  unsigned port_number = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), port_number);
  if (t.host.empty() || port.empty() || ec != std::errc() || end != port.data() + port.size() ||
      port_number > 65535) {
    return base::InvalidArgumentError("Malformed target: " + t.display);
  }
  t.port = std::string(port);
  t.authority = std::string(text);
  return t;
}

// ---------------------------------------------------------------------------------------------
// Socket: a non-blocking fd used with poll(), so every operation honours a deadline.

int MillisUntil(const Deadline& deadline) {
  if (!deadline) return -1;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(std::min<int64_t>(left.count(), INT32_MAX));
}

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() { ::close(fd_); }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // Connects within `deadline`. unavailable (naming the target) when that fails.
  static base::Result<std::unique_ptr<Socket>> Connect(const Target& target, Deadline deadline);

  // Reads at most n bytes. Returns 0 with ec = eof at end of stream, timed_out at the deadline.
  size_t ReadSome(void* data, size_t n, const Deadline& deadline, boost::system::error_code& ec) {
    while (true) {
      ssize_t r = ::recv(fd_, data, n, 0);
      if (r > 0) return static_cast<size_t>(r);
      if (r == 0) {
        ec = boost::asio::error::eof;
        return 0;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        ec = boost::system::error_code(errno, boost::system::system_category());
        return 0;
      }
      if (!Wait(POLLIN, deadline, ec)) return 0;
    }
  }

  // Writes some of the bytes (at least one unless ec is set).
  size_t WriteSome(const void* data, size_t n, const Deadline& deadline,
                   boost::system::error_code& ec) {
    while (true) {
      ssize_t r = ::send(fd_, data, n, MSG_NOSIGNAL);
      if (r >= 0) return static_cast<size_t>(r);
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        ec = boost::system::error_code(errno, boost::system::system_category());
        return 0;
      }
      if (!Wait(POLLOUT, deadline, ec)) return 0;
    }
  }

  // True when bytes (or EOF) wait to be read right now.
  bool Readable() const {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }

  bool WriteAll(std::string_view bytes, const Deadline& deadline, boost::system::error_code& ec) {
    while (!bytes.empty()) {
      size_t n = WriteSome(bytes.data(), bytes.size(), deadline, ec);
      if (ec) return false;
      bytes.remove_prefix(n);
    }
    return true;
  }

 private:
  bool Wait(short events, const Deadline& deadline, boost::system::error_code& ec) {
    pollfd p{fd_, events, 0};
    while (true) {
      int r = ::poll(&p, 1, MillisUntil(deadline));
      if (r > 0) return true;
      if (r == 0) {
        ec = boost::asio::error::timed_out;
        return false;
      }
      if (errno != EINTR) {
        ec = boost::system::error_code(errno, boost::system::system_category());
        return false;
      }
    }
  }

  int fd_;
};

base::Status ConnectError(const Target& target, std::string_view why) {
  return base::UnavailableError("Cannot connect to " + target.display + ": " + std::string(why));
}

// Connects a non-blocking socket to one address, waiting at most until `deadline`.
// Returns the fd, or -1 with *why set.
int ConnectOne(int family, const sockaddr* addr, socklen_t len, const Deadline& deadline,
               std::string* why) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *why = std::strerror(errno);
    return -1;
  }
  if (::connect(fd, addr, len) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) {
      *why = std::strerror(errno);
      ::close(fd);
      return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    int r;
    do {
      r = ::poll(&p, 1, MillisUntil(deadline));
    } while (r < 0 && errno == EINTR);
    if (r == 0) {
      *why = "connect timed out";
      ::close(fd);
      return -1;
    }
    int err = 0;
    socklen_t err_len = sizeof(err);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
    if (r < 0 || err != 0) {
      *why = std::strerror(r < 0 ? errno : err);
      ::close(fd);
      return -1;
    }
  }
  if (family != AF_UNIX) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return fd;
}

base::Result<std::unique_ptr<Socket>> Socket::Connect(const Target& target, Deadline deadline) {
  std::string why;
  if (target.unix_socket) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, target.path.data(), target.path.size());
    int fd =
        ConnectOne(AF_UNIX, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr), deadline, &why);
    if (fd < 0) return ConnectError(target, why);
    return std::make_unique<Socket>(fd);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* results = nullptr;
  int rc = ::getaddrinfo(target.host.c_str(), target.port.c_str(), &hints, &results);
  if (rc != 0) return ConnectError(target, gai_strerror(rc));
  int fd = -1;
  for (addrinfo* ai = results; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ConnectOne(ai->ai_family, ai->ai_addr, ai->ai_addrlen, deadline, &why);
  }
  ::freeaddrinfo(results);
  if (fd < 0) return ConnectError(target, why);
  return std::make_unique<Socket>(fd);
}

// Beast's SyncReadStream / SyncWriteStream over a Socket and the current call's deadline.
class BeastSyncStream {
 public:
  BeastSyncStream(Socket& socket, const Deadline& deadline)
      : socket_(socket), deadline_(deadline) {}

  template <typename MutableBufferSequence>
  size_t read_some(const MutableBufferSequence& buffers, boost::system::error_code& ec) {
    ec = {};
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers); ++it) {
      boost::asio::mutable_buffer b(*it);
      if (b.size() > 0) return socket_.ReadSome(b.data(), b.size(), deadline_, ec);
    }
    return 0;
  }
  template <typename MutableBufferSequence>
  size_t read_some(const MutableBufferSequence& buffers) {
    boost::system::error_code ec;
    size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }
  template <typename ConstBufferSequence>
  size_t write_some(const ConstBufferSequence& buffers, boost::system::error_code& ec) {
    ec = {};
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers); ++it) {
      boost::asio::const_buffer b(*it);
      if (b.size() > 0) return socket_.WriteSome(b.data(), b.size(), deadline_, ec);
    }
    return 0;
  }
  template <typename ConstBufferSequence>
  size_t write_some(const ConstBufferSequence& buffers) {
    boost::system::error_code ec;
    size_t n = write_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

 private:
  Socket& socket_;
  const Deadline& deadline_;
};

// ---------------------------------------------------------------------------------------------
// One HTTP exchange as the Connect layer sees it, independent of the HTTP version.

struct Exchange {
  std::string path;
  Metadata headers;  // request headers, lower-case names, no pseudo-headers
  std::string body;
  Deadline deadline;
  // Called once with the final (non-1xx) status and headers.
  std::function<void(int status, Metadata headers)> on_headers;
  // Called with body bytes in order; returning false abandons the exchange (the call is
  // cancelled: HTTP/1.1 closes the connection, HTTP/2 resets the stream).
  std::function<bool(std::string_view bytes)> on_data;
};

struct ExchangeResult {
  base::Status status;        // transport outcome: OK when the response ended or was abandoned
  bool abandoned = false;     // on_data returned false
  bool got_response = false;  // any response byte arrived (a failed exchange is not retried)
  Metadata trailers;          // HTTP/2 trailers, if any
};

base::Status TransportError(const Target& target, const Deadline& deadline,
                            const boost::system::error_code& ec, std::string_view what) {
  if (ec == boost::asio::error::timed_out || (deadline && Clock::now() >= *deadline)) {
    return base::DeadlineExceededError("Deadline exceeded waiting for " + target.display);
  }
  return base::UnavailableError(std::string(what) + " " + target.display + ": " + ec.message());
}

// A pooled connection. One call at a time.
class Connection {
 public:
  virtual ~Connection() = default;
  virtual ExchangeResult RoundTrip(Exchange& exchange) = 0;
  // True when the connection may carry another exchange.
  virtual bool reusable() const = 0;
  // Called before reusing an idle connection: false when the peer closed it meanwhile.
  virtual bool Alive() = 0;
};

class Http1Conn : public Connection {
 public:
  Http1Conn(const Target& target, std::unique_ptr<Socket> socket)
      : target_(target), socket_(std::move(socket)) {}

  ExchangeResult RoundTrip(Exchange& ex) override {
    reusable_ = false;
    ExchangeResult result;
    try {
      result = DoRoundTrip(ex);
    } catch (const std::exception& e) {
      result.status = base::InternalError(std::string("HTTP/1.1 client: ") + e.what());
    }
    return result;
  }
  bool reusable() const override { return reusable_; }
  // An idle HTTP/1.1 connection has nothing to read unless the server closed it.
  bool Alive() override { return reusable_ && !socket_->Readable(); }

 private:
  ExchangeResult DoRoundTrip(Exchange& ex) {
    ExchangeResult result;
    BeastSyncStream stream(*socket_, ex.deadline);
    http::request<http::string_body> req{http::verb::post, ex.path, 11};
    req.set(http::field::host, target_.authority);
    for (const auto& [name, value] : ex.headers) req.insert(name, value);
    req.body() = std::move(ex.body);
    req.prepare_payload();
    req.keep_alive(true);
    boost::system::error_code ec;
    http::write(stream, req, ec);
    if (ec) {
      result.status = TransportError(target_, ex.deadline, ec, "Cannot send to");
      return result;
    }

    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    parser.header_limit(1u << 20);
    // No Expect: 100-continue is sent, so no interim response is expected.
    http::read_header(stream, buffer_, parser, ec);
    if (ec) {
      if (buffer_.size() > 0) result.got_response = true;
      result.status = TransportError(target_, ex.deadline, ec, "No response from");
      return result;
    }
    result.got_response = true;
    Metadata headers;
    for (const auto& field : parser.get().base()) headers.Add(field.name_string(), field.value());
    ex.on_headers(parser.get().result_int(), std::move(headers));

    while (true) {
      std::string& body = parser.get().body();
      if (!body.empty()) {
        std::string chunk;
        chunk.swap(body);
        if (!ex.on_data(chunk)) {
          result.abandoned = true;
          return result;  // not reusable: the rest of the response is still coming
        }
      }
      if (parser.is_done()) break;
      http::read_some(stream, buffer_, parser, ec);
      if (ec) {
        result.status = TransportError(target_, ex.deadline, ec, "Response cut short by");
        return result;
      }
    }
    reusable_ = parser.get().keep_alive() && buffer_.size() == 0;
    return result;
  }

  const Target& target_;
  std::unique_ptr<Socket> socket_;
  beast::flat_buffer buffer_;
  bool reusable_ = false;
};

// ---------------------------------------------------------------------------------------------
// HTTP/2 (h2c with prior knowledge) on nghttp2.

class H2Conn : public Connection {
 public:
  H2Conn(const Target& target, std::unique_ptr<Socket> socket)
      : target_(target), socket_(std::move(socket)) {
    nghttp2_session_callbacks* callbacks = nullptr;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, &H2Conn::OnHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &H2Conn::OnFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &H2Conn::OnDataChunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &H2Conn::OnStreamClose);
    nghttp2_session_client_new(&session_, callbacks, this);
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                         {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 20}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 2);
    // Let the server send far ahead on the connection as a whole.
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, 16u << 20);
  }
  ~H2Conn() override { nghttp2_session_del(session_); }

  ExchangeResult RoundTrip(Exchange& ex) override {
    ExchangeResult result;
    if (broken_) {
      result.status = base::UnavailableError("Connection to " + target_.display + " is closed");
      return result;
    }
    call_ = CallState{};
    body_ = std::move(ex.body);
    body_offset_ = 0;

    std::vector<std::pair<std::string, std::string>> fields = {{":method", "POST"},
                                                               {":scheme", "http"},
                                                               {":authority", target_.authority},
                                                               {":path", ex.path}};
    for (const auto& [name, value] : ex.headers) fields.emplace_back(name, value);
    std::vector<nghttp2_nv> nva;
    for (auto& [name, value] : fields) {
      nva.push_back(nghttp2_nv{reinterpret_cast<uint8_t*>(name.data()),
                               reinterpret_cast<uint8_t*>(value.data()), name.size(), value.size(),
                               NGHTTP2_NV_FLAG_NONE});
    }
    nghttp2_data_provider provider{};
    provider.read_callback = &H2Conn::ReadBody;
    int32_t stream_id =
        nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(), &provider, this);
    if (stream_id < 0) {
      broken_ = true;
      result.status = base::UnavailableError("Cannot start a stream to " + target_.display + ": " +
                                             nghttp2_strerror(stream_id));
      return result;
    }
    call_.stream_id = stream_id;

    boost::system::error_code ec;
    char buf[16384];
    while (true) {
      if (!Flush(ex.deadline, ec)) break;
      if (call_.headers_done && !call_.headers_delivered) {
        call_.headers_delivered = true;
        result.got_response = true;
        ex.on_headers(call_.status, std::move(call_.headers));
      }
      if (!call_.data.empty() && call_.headers_delivered) {
        std::string chunk;
        chunk.swap(call_.data);
        if (!ex.on_data(chunk)) {
          result.abandoned = true;
          if (!call_.closed) {
            nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
            Flush(ex.deadline, ec);
          }
          break;
        }
      }
      if (call_.closed) {
        if (!call_.headers_delivered) {
          result.status = base::UnavailableError("Stream to " + target_.display +
                                                 " closed without a response (" +
                                                 nghttp2_http2_strerror(call_.error_code) + ")");
        } else if (call_.error_code != NGHTTP2_NO_ERROR) {
          result.status = base::UnavailableError("Stream to " + target_.display + " reset (" +
                                                 nghttp2_http2_strerror(call_.error_code) + ")");
        }
        break;
      }
      if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) {
        result.status = base::UnavailableError("Connection to " + target_.display + " closed");
        broken_ = true;
        break;
      }
      size_t n = socket_->ReadSome(buf, sizeof(buf), ex.deadline, ec);
      if (ec) break;
      result.got_response = true;
      ssize_t r = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(buf), n);
      if (r < 0) {
        broken_ = true;
        result.status = base::UnavailableError("HTTP/2 error from " + target_.display + ": " +
                                               nghttp2_strerror(static_cast<int>(r)));
        break;
      }
    }
    if (ec) {
      broken_ = true;
      result.status =
          TransportError(target_, ex.deadline, ec,
                         result.got_response ? "Response cut short by" : "No response from");
    }
    result.trailers = std::move(call_.trailers);
    // A stream still open here (deadline, abandon without the peer's close) stays tracked by
    // nghttp2; the connection is still usable since RST_STREAM was sent, except after errors.
    if (!call_.closed && !result.abandoned) broken_ = true;
    call_.stream_id = -1;
    return result;
  }

  // Reads what the server sent while the connection was idle (PING, SETTINGS, GOAWAY, EOF).
  bool Alive() override {
    char buf[4096];
    while (!broken_ && socket_->Readable()) {
      boost::system::error_code ec;
      size_t n = socket_->ReadSome(buf, sizeof(buf), Clock::now(), ec);
      if (ec || nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(buf), n) < 0) {
        broken_ = true;
      }
    }
    return reusable();
  }

  bool reusable() const override {
    return !broken_ && !goaway_ && nghttp2_session_want_read(session_) &&
           nghttp2_session_check_request_allowed(session_);
  }

 private:
  struct CallState {
    int32_t stream_id = -1;
    int status = 0;
    Metadata headers;
    Metadata trailers;
    bool headers_done = false;
    bool headers_delivered = false;
    std::string data;
    bool closed = false;
    uint32_t error_code = NGHTTP2_NO_ERROR;
  };

  bool Flush(const Deadline& deadline, boost::system::error_code& ec) {
    while (true) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) {
        ec = boost::asio::error::fault;
        return false;
      }
      if (n == 0) return true;
      if (!socket_->WriteAll(
              std::string_view(reinterpret_cast<const char*>(data), static_cast<size_t>(n)),
              deadline, ec)) {
        return false;
      }
    }
  }

  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source*, void* user_data) {
    auto* self = static_cast<H2Conn*>(user_data);
    size_t n = std::min(length, self->body_.size() - self->body_offset_);
    std::memcpy(buf, self->body_.data() + self->body_offset_, n);
    self->body_offset_ += n;
    if (self->body_offset_ == self->body_.size()) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                      void* user_data) {
    auto* self = static_cast<H2Conn*>(user_data);
    if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != self->call_.stream_id) {
      return 0;
    }
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    CallState& call = self->call_;
    if (!call.headers_done) {
      if (n == ":status") {
        int status = 0;
        std::from_chars(v.data(), v.data() + v.size(), status);
        call.status = status;
      } else if (!n.starts_with(':')) {
        call.headers.Add(n, v);
      }
    } else if (!n.starts_with(':')) {
      call.trailers.Add(n, v);
    }
    return 0;
  }

  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    auto* self = static_cast<H2Conn*>(user_data);
    if (frame->hd.type == NGHTTP2_GOAWAY) {
      self->goaway_ = true;
      return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS && frame->hd.stream_id == self->call_.stream_id &&
        (frame->hd.flags & NGHTTP2_FLAG_END_HEADERS) && !self->call_.headers_done) {
      if (self->call_.status >= 100 && self->call_.status < 200) {
        self->call_.status = 0;  // interim response
        self->call_.headers = Metadata();
      } else {
        self->call_.headers_done = true;
      }
    }
    return 0;
  }

  static int OnDataChunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                         size_t len, void* user_data) {
    auto* self = static_cast<H2Conn*>(user_data);
    if (stream_id == self->call_.stream_id) {
      self->call_.data.append(reinterpret_cast<const char*>(data), len);
    }
    return 0;
  }

  static int OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                           void* user_data) {
    auto* self = static_cast<H2Conn*>(user_data);
    if (stream_id == self->call_.stream_id) {
      self->call_.closed = true;
      self->call_.error_code = error_code;
    }
    return 0;
  }

  const Target& target_;
  std::unique_ptr<Socket> socket_;
  nghttp2_session* session_ = nullptr;
  CallState call_;
  std::string body_;
  size_t body_offset_ = 0;
  bool broken_ = false;
  bool goaway_ = false;
};

// ---------------------------------------------------------------------------------------------
// The Connect protocol.

struct ResponseHead {
  int status = 0;
  Metadata headers;   // without Trailer-* fields
  Metadata trailers;  // Trailer-* fields, prefix stripped (Connect unary)
};

void SplitUnaryTrailers(Metadata all, ResponseHead* head) {
  for (const auto& [name, value] : all) {
    if (name.starts_with("trailer-")) {
      head->trailers.Add(std::string_view(name).substr(8), value);
    } else {
      head->headers.Add(name, value);
    }
  }
}

// The status of a non-200 Connect response: its error JSON when it has one (§3), otherwise the
// code inferred from the HTTP status (§6.3).
base::Status HttpErrorStatus(int http_status, const Metadata& headers, std::string body) {
  std::string_view type = headers.Get("content-type").value_or("");
  if (type.starts_with("application/json") && !body.empty()) {
    if (auto enc = headers.Get("content-encoding")) {
      std::optional<wire::Compression> c = wire::ParseCompression(*enc);
      if (c) {
        auto plain = wire::Decompress(*c, body, kMaxResponseBytes);
        if (plain.ok()) body = std::move(*plain);
      }
    }
    auto error = wire::DecodeConnectError(body);
    if (error.ok()) {
      base::Status status = error->ToStatus();
      if (status.message().empty()) {
        return base::Status(status.code(), "HTTP " + std::to_string(http_status));
      }
      return status;
    }
  }
  return base::Status(wire::CodeForHttpStatus(http_status),
                      "HTTP status " + std::to_string(http_status));
}

base::Result<wire::Compression> ResponseCompression(const Metadata& headers,
                                                    std::string_view header) {
  std::optional<std::string_view> name = headers.Get(header);
  if (!name) return wire::Compression::kIdentity;
  std::optional<wire::Compression> c = wire::ParseCompression(*name);
  if (!c) {
    return base::InternalError("Server used unsupported compression: " + std::string(*name));
  }
  return *c;
}

class ClientImpl : public Client {
 public:
  ClientImpl(ClientOptions options, Target target)
      : options_(std::move(options)), target_(std::move(target)) {}

  base::Status Unary(std::string_view path, const google::protobuf::Message& request,
                     google::protobuf::Message* response, const CallOptions& options) override {
    ASSIGN_OR_RETURN(std::string body, wire::SerializeMessage(options_.codec, request));
    Exchange ex;
    ex.path = std::string(path);
    BaseHeaders(options, &ex);
    ex.headers.Add("content-type", wire::ContentTypeFor(Protocol::kConnect, options_.codec, false));
    if (options_.gzip) {
      ex.headers.Add("accept-encoding", "gzip");
      if (!body.empty()) {
        ASSIGN_OR_RETURN(body, wire::GzipCompress(body));
        ex.headers.Add("content-encoding", "gzip");
      }
    }
    ex.body = std::move(body);

    ResponseHead head;
    std::string response_body;
    ex.on_headers = [&](int status, Metadata headers) {
      head.status = status;
      SplitUnaryTrailers(std::move(headers), &head);
    };
    ex.on_data = [&](std::string_view bytes) {
      if (response_body.size() + bytes.size() > kMaxResponseBytes) return false;
      response_body.append(bytes);
      return true;
    };
    ExchangeResult result = Run(ex);
    if (!result.status.ok()) return result.status;
    if (result.abandoned) {
      return base::ResourceExhaustedError("Response from " + target_.display + " is too large");
    }
    for (const auto& [name, value] : result.trailers) head.trailers.Add(name, value);
    if (options.response_headers) *options.response_headers = head.headers;
    if (options.response_trailers) *options.response_trailers = head.trailers;

    if (head.status != 200) {
      return HttpErrorStatus(head.status, head.headers, std::move(response_body));
    }
    std::string_view type = head.headers.Get("content-type").value_or("");
    std::optional<wire::ContentTypeInfo> info = wire::ClassifyContentType(type);
    if (!info || info->enveloped || info->codec != options_.codec) {
      return base::InternalError("Unexpected response Content-Type: " + std::string(type));
    }
    ASSIGN_OR_RETURN(wire::Compression compression,
                     ResponseCompression(head.headers, "content-encoding"));
    if (!response_body.empty() && compression != wire::Compression::kIdentity) {
      ASSIGN_OR_RETURN(response_body,
                       wire::Decompress(compression, response_body, kMaxResponseBytes));
    }
    base::Status parsed = wire::ParseMessage(options_.codec, response_body, response);
    if (!parsed.ok()) return base::InternalError("Bad response: " + parsed.message());
    return base::OkStatus();
  }

  base::Status ServerStream(std::string_view path, const google::protobuf::Message& request,
                            const google::protobuf::Message& response_prototype,
                            const std::function<bool(const google::protobuf::Message&)>& on_message,
                            const CallOptions& options) override {
    ASSIGN_OR_RETURN(std::string payload, wire::SerializeMessage(options_.codec, request));
    Exchange ex;
    ex.path = std::string(path);
    BaseHeaders(options, &ex);
    ex.headers.Add("content-type", wire::ContentTypeFor(Protocol::kConnect, options_.codec, true));
    uint8_t flags = 0;
    if (options_.gzip) {
      ex.headers.Add("connect-content-encoding", "gzip");
      ex.headers.Add("connect-accept-encoding", "gzip");
      if (!payload.empty()) {
        ASSIGN_OR_RETURN(payload, wire::GzipCompress(payload));
        flags = wire::kFlagCompressed;
      }
    }
    ex.headers.Add("accept-encoding", "identity");
    ex.body = wire::EncodeEnvelope(flags, payload);

    ResponseHead head;
    std::string error_body;  // non-200 responses only
    wire::EnvelopeDecoder decoder(kMaxResponseBytes);
    std::vector<wire::Envelope> envelopes;
    std::unique_ptr<google::protobuf::Message> scratch(response_prototype.New());
    base::Status stream_status;  // error found while reading the stream
    std::optional<wire::EndStream> end;
    bool cancelled_by_caller = false;
    wire::Compression compression = wire::Compression::kIdentity;

    ex.on_headers = [&](int status, Metadata headers) {
      head.status = status;
      head.headers = std::move(headers);
      if (status != 200) return;
      std::string_view type = head.headers.Get("content-type").value_or("");
      std::optional<wire::ContentTypeInfo> info = wire::ClassifyContentType(type);
      if (!info || !info->enveloped || info->protocol != Protocol::kConnect ||
          info->codec != options_.codec) {
        stream_status =
            base::InternalError("Unexpected response Content-Type: " + std::string(type));
        return;
      }
      auto c = ResponseCompression(head.headers, "connect-content-encoding");
      if (!c.ok()) {
        stream_status = c.status();
      } else {
        compression = *c;
      }
    };
    ex.on_data = [&](std::string_view bytes) {
      if (head.status != 200) {
        if (error_body.size() + bytes.size() > kMaxResponseBytes) return false;
        error_body.append(bytes);
        return true;
      }
      if (!stream_status.ok() || end) return false;
      envelopes.clear();
      base::Status fed = decoder.Feed(bytes, &envelopes);
      for (wire::Envelope& env : envelopes) {
        std::string data = std::move(env.payload);
        if (env.flags & wire::kFlagCompressed) {
          if (compression == wire::Compression::kIdentity) {
            stream_status = base::InternalError("Compressed message without an encoding");
            return false;
          }
          auto plain = wire::Decompress(compression, data, kMaxResponseBytes);
          if (!plain.ok()) {
            stream_status = plain.status();
            return false;
          }
          data = std::move(*plain);
        }
        if (env.flags & wire::kFlagEndStream) {
          auto decoded = wire::DecodeEndStream(data);
          if (!decoded.ok()) {
            stream_status =
                base::InternalError("Bad end-stream message: " + decoded.status().message());
            return false;
          }
          end = std::move(*decoded);
          return true;  // read on to the end of the body
        }
        base::Status parsed = wire::ParseMessage(options_.codec, data, scratch.get());
        if (!parsed.ok()) {
          stream_status = base::InternalError("Bad response message: " + parsed.message());
          return false;
        }
        if (!on_message(*scratch)) {
          cancelled_by_caller = true;
          return false;
        }
      }
      if (!fed.ok()) {
        stream_status = fed;
        return false;
      }
      return true;
    };
    ExchangeResult result = Run(ex);
    if (options.response_headers) *options.response_headers = head.headers;
    if (cancelled_by_caller) return base::OkStatus();
    if (!result.status.ok()) return result.status;
    if (head.status != 200) return HttpErrorStatus(head.status, head.headers, error_body);
    if (!stream_status.ok()) return stream_status;
    if (!end) {
      if (decoder.mid_envelope()) {
        return base::InternalError("Stream from " + target_.display + " ended inside a message");
      }
      return base::InternalError("Stream from " + target_.display +
                                 " ended without an end-stream message");
    }
    if (options.response_trailers) *options.response_trailers = end->metadata;
    if (end->error) {
      base::Status status = end->error->ToStatus();
      if (status.message().empty()) return base::Status(status.code(), "Stream failed");
      return status;
    }
    return base::OkStatus();
  }

 private:
  void BaseHeaders(const CallOptions& options, Exchange* ex) const {
    ex->headers.Add("user-agent", kUserAgent);
    ex->headers.Add("connect-protocol-version", "1");
    if (options.timeout.count() > 0) {
      // The header holds at most 10 digits (§3); longer timeouts are clamped (about 115 days).
      std::chrono::milliseconds timeout =
          std::min(options.timeout, std::chrono::milliseconds(9'999'999'999));
      ex->headers.Add("connect-timeout-ms", std::to_string(timeout.count()));
      ex->deadline = Clock::now() + timeout + kDeadlineGrace;
    }
    for (const auto& [name, value] : options_.headers) ex->headers.Add(name, value);
    for (const auto& [name, value] : options.headers) ex->headers.Add(name, value);
  }

  // Runs the exchange on a pooled or new connection. A pooled connection that fails before
  // any response byte arrived (the server closed it while idle) is replaced once.
  ExchangeResult Run(Exchange& ex) {
    std::string body = ex.body;  // kept for a retry; transports consume ex.body
    for (int attempt = 0;; ++attempt) {
      bool pooled = false;
      std::unique_ptr<Connection> conn = TakeIdle();
      if (conn) {
        pooled = true;
      } else {
        Deadline connect_deadline = Clock::now() + options_.connect_timeout;
        if (ex.deadline && *ex.deadline < *connect_deadline) connect_deadline = ex.deadline;
        auto socket = Socket::Connect(target_, connect_deadline);
        if (!socket.ok()) {
          ExchangeResult r;
          r.status = socket.status();
          if (ex.deadline && Clock::now() >= *ex.deadline) {
            r.status =
                base::DeadlineExceededError("Deadline exceeded connecting to " + target_.display);
          }
          return r;
        }
        if (options_.transport == ClientOptions::Transport::kH2c) {
          conn = std::make_unique<H2Conn>(target_, std::move(*socket));
        } else {
          conn = std::make_unique<Http1Conn>(target_, std::move(*socket));
        }
      }
      ex.body = body;
      ExchangeResult r = conn->RoundTrip(ex);
      if (!r.status.ok() && pooled && !r.got_response && attempt == 0 &&
          r.status.code() == base::StatusCode::kUnavailable) {
        continue;
      }
      if (r.status.ok() && !r.abandoned && conn->reusable()) ReturnIdle(std::move(conn));
      return r;
    }
  }

  // An idle connection the server has not closed, or null.
  std::unique_ptr<Connection> TakeIdle() {
    while (true) {
      std::unique_ptr<Connection> c;
      {
        std::lock_guard lock(mu_);
        if (idle_.empty()) return nullptr;
        c = std::move(idle_.back());
        idle_.pop_back();
      }
      if (c->Alive()) return c;
    }
  }
  void ReturnIdle(std::unique_ptr<Connection> conn) {
    std::lock_guard lock(mu_);
    if (idle_.size() < kMaxIdleConnections) idle_.push_back(std::move(conn));
  }

  // Constant after construction.
  const ClientOptions options_;
  const Target target_;

  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;  // guarded by mu_
};

}  // namespace

base::Result<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  ASSIGN_OR_RETURN(Target target, ParseTarget(options.target));
  return std::unique_ptr<Client>(new ClientImpl(std::move(options), std::move(target)));
}

}  // namespace metald::rpc

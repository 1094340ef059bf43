// Server: listeners, connections, TLS and timers on Boost.Asio; the protocols live in the
// sessions (http1.cc, http2.cc) and the engine (engine.cc).
//
// Threading: one io_context run by `io_threads` threads. Every connection lives on its own strand
// (its socket, TLS stream, timer and session are touched only there); every acceptor on its own
// strand too. Handler threads reach a connection only through SessionHost::WakeWriter, which
// posts to the strand. The owner thread calls Start and Shutdown.
//
// Lifetime: a connection is owned by the server's registry from accept until it closes, and by
// every handler it has queued on the io_context; closing removes it from the registry, and the
// last queued handler frees it.

#include "metald/rpc/server.h"

#include <openssl/ssl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>

#include "metald/rpc/internal/engine.h"
#include "metald/rpc/internal/session.h"

namespace metald::rpc {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using local = asio::local::stream_protocol;
using Strand = asio::strand<asio::io_context::executor_type>;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

constexpr std::string_view kH2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
// How long a graceful close waits for the peer's EOF (TCP) or close_notify (TLS) at most; the
// wait lets the peer read the last response instead of receiving a reset.
constexpr std::chrono::milliseconds kLingerMax{2000};
constexpr size_t kReadChunk = 16 * 1024;
// A write buffer up to this size is kept for the connection's next response.
constexpr size_t kKeepWriteBufBytes = 64 * 1024;

std::string FormatEndpoint(const tcp::endpoint& ep) {
  if (ep.address().is_v6()) {
    return "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
  }
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

// A parsed listen address.
struct ListenSpec {
  std::string text;  // as given
  bool is_unix = false;
  std::string unix_path;  // when is_unix
  tcp::endpoint tcp_endpoint;
};

base::Result<ListenSpec> ParseListenAddress(const std::string& text) {
  ListenSpec spec;
  spec.text = text;
  auto bad = [&](std::string_view why) {
    return base::InvalidArgumentError("Bad listen address \"" + text + "\": " + std::string(why));
  };
  if (text.starts_with("unix:")) {
    spec.is_unix = true;
    spec.unix_path = text.substr(5);
    if (spec.unix_path.empty()) return bad("empty socket path");
    // sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
    if (spec.unix_path.size() >= 108) return bad("socket path longer than 107 bytes");
    return spec;
  }
  std::string host;
  std::string port;
  if (text.starts_with("[")) {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad("expected [ipv6]:port");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) return bad("expected host:port or unix:/path");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) return bad("an IPv6 address needs brackets");
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return bad("bad port");
  }
  unsigned long port_number = std::stoul(port);
  if (port_number > 65535) return bad("port out of range");
  error_code ec;
  asio::ip::address address = asio::ip::make_address(host, ec);
  if (ec) return bad("not an IP address");
  if (text.starts_with("[") != address.is_v6()) return bad("brackets are for IPv6 only");
  spec.tcp_endpoint = tcp::endpoint(address, static_cast<unsigned short>(port_number));
  return spec;
}

// ALPN: h2 first, then http/1.1; a client offering neither gets no ALPN (and HTTP/1.1 or the
// h2 preface decide).
int SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  static constexpr unsigned char kProtocols[] = "\x02h2\x08http/1.1";
  unsigned char* selected = nullptr;
  unsigned char selected_len = 0;
  if (SSL_select_next_proto(&selected, &selected_len, kProtocols, sizeof(kProtocols) - 1, in,
                            inlen) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = selected;
  *outlen = selected_len;
  return SSL_TLSEXT_ERR_OK;
}

base::Result<std::unique_ptr<ssl::context>> MakeTlsContext(const TlsOptions& tls) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                   ssl::context::single_dh_use);
  error_code ec;
  ctx->use_certificate_chain_file(tls.cert_file, ec);
  if (ec) {
    return base::InvalidArgumentError("Cannot load TLS certificate " + tls.cert_file + ": " +
                                      ec.message());
  }
  ctx->use_private_key_file(tls.key_file, ssl::context::pem, ec);
  if (ec) {
    return base::InvalidArgumentError("Cannot load TLS key " + tls.key_file + ": " + ec.message());
  }
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    return base::InvalidArgumentError("TLS key " + tls.key_file + " does not match certificate " +
                                      tls.cert_file);
  }
  SSL_CTX_set_alpn_select_cb(ctx->native_handle(), SelectAlpn, nullptr);
  if (!tls.client_ca_file.empty()) {
    ctx->load_verify_file(tls.client_ca_file, ec);
    if (ec) {
      return base::InvalidArgumentError("Cannot load client CA file " + tls.client_ca_file + ": " +
                                        ec.message());
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(tls.client_ca_file.c_str());
    if (names != nullptr) SSL_CTX_set_client_CA_list(ctx->native_handle(), names);
    ctx->set_verify_mode(ssl::verify_peer |
                         (tls.require_client_cert ? ssl::verify_fail_if_no_peer_cert : 0));
    // Session resumption with client verification needs a context id.
    static constexpr unsigned char kSessionContext[] = "metald";
    SSL_CTX_set_session_id_context(ctx->native_handle(), kSessionContext,
                                   sizeof(kSessionContext) - 1);
  } else if (tls.require_client_cert) {
    return base::InvalidArgumentError("require_client_cert needs client_ca_file");
  }
  return ctx;
}

class ConnectionBase;

// What every connection needs from the server. Thread-safe.
class Registry {
 public:
  // Most live connections; 0 = unlimited. Set before the first Add.
  void set_max_live(size_t max_live) { max_live_ = max_live; }

  // Adds a live connection; false once the server stops or when max_live connections are open
  // already (the caller closes it).
  bool Add(std::shared_ptr<ConnectionBase> c) {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || (max_live_ != 0 && live_.size() >= max_live_)) return false;
    ConnectionBase* key = c.get();
    live_.emplace(key, std::move(c));
    return true;
  }
  void Remove(ConnectionBase* c) {
    std::lock_guard<std::mutex> lock(mu_);
    live_.erase(c);
    if (live_.empty()) empty_.notify_all();
  }
  // Stops Add and returns the live connections.
  std::vector<std::shared_ptr<ConnectionBase>> Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    return Snapshot();
  }
  std::vector<std::shared_ptr<ConnectionBase>> Live() {
    std::lock_guard<std::mutex> lock(mu_);
    return Snapshot();
  }
  // Waits until no connection is left or `until` passes; returns whether none is left.
  bool WaitEmpty(Clock::time_point until) {
    std::unique_lock<std::mutex> lock(mu_);
    return empty_.wait_until(lock, until, [&] { return live_.empty(); });
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    live_.clear();
  }

 private:
  // REQUIRES: mu_ held.
  std::vector<std::shared_ptr<ConnectionBase>> Snapshot() {
    std::vector<std::shared_ptr<ConnectionBase>> out;
    out.reserve(live_.size());
    for (auto& [key, c] : live_) out.push_back(c);
    return out;
  }

  size_t max_live_ = 0;  // Constant after Start.
  std::mutex mu_;
  std::condition_variable empty_;
  bool stopping_ = false;                                                      // guarded by mu_
  std::unordered_map<ConnectionBase*, std::shared_ptr<ConnectionBase>> live_;  // guarded by mu_
};

// Settings shared by every connection. Constant after Start.
struct ConnectionConfig {
  internal::Engine* engine = nullptr;
  internal::SessionLimits limits;
  std::chrono::milliseconds read_timeout{0};
  std::chrono::milliseconds idle_timeout{0};
  Registry* registry = nullptr;
};

class ConnectionBase : public internal::SessionHost,
                       public std::enable_shared_from_this<ConnectionBase> {
 public:
  // Starts the handshake or the first read. Any thread.
  virtual void Start() = 0;
  // Graceful shutdown: in-flight requests finish, then the connection closes. Any thread.
  virtual void BeginShutdown() = 0;
  // Closes at once, cancelling calls in flight. Any thread.
  virtual void ForceClose() = 0;
  // Closes at once from the owner thread. REQUIRES: no io thread runs any more.
  virtual void CloseNowForShutdown() = 0;
};

template <typename Stream>
constexpr bool kIsTls =
    !std::is_same_v<Stream, tcp::socket> && !std::is_same_v<Stream, local::socket>;

// One accepted socket (plain TCP, unix, or TLS over TCP) and its session.
//
// Thread-safety: everything but the SessionHost methods and the posting entry points runs on
// strand_. Invariant: once closed_, the session has seen OnClose and no new I/O starts.
template <typename Stream>
class Connection final : public ConnectionBase {
 public:
  Connection(const ConnectionConfig& config, Strand strand, Stream stream, std::string peer)
      : config_(config),
        strand_(std::move(strand)),
        stream_(std::move(stream)),
        timer_(strand_),
        peer_(std::move(peer)) {}

  void Start() override {
    asio::dispatch(strand_, [self = Self()] { self->DoStart(); });
  }

  void BeginShutdown() override {
    asio::post(strand_, [self = Self()] {
      if (self->closed_) return;
      if (self->session_ == nullptr) {
        self->Close();  // no request seen yet: nothing to finish
        return;
      }
      self->session_->BeginShutdown();
      self->Pump();
    });
  }

  void ForceClose() override {
    asio::post(strand_, [self = Self()] { self->Close(); });
  }

  void CloseNowForShutdown() override { Close(); }

  // SessionHost.
  void WakeWriter() override {
    // On this connection's strand a Pump is already due: every strand entry point that feeds
    // the session ends in Pump, and a wake that arrives while Pump runs re-posts it. So a wake
    // from the strand (a nonblocking handler answering inline) is only noted, saving a post and
    // an empty Pump per call.
    if (strand_.running_in_this_thread()) {
      wake_on_strand_ = true;
      return;
    }
    PostPump();
  }
  bool OnIoThread() const override { return strand_.running_in_this_thread(); }
  const std::string& peer() const override { return peer_; }
  bool tls() const override { return kIsTls<Stream>; }

 private:
  // Any thread.
  void PostPump() {
    if (wake_posted_.exchange(true)) return;
    // weak: a session may wake while the connection is being destroyed (nothing to do then).
    auto self = std::static_pointer_cast<Connection>(weak_from_this().lock());
    if (self == nullptr) return;
    asio::post(strand_, [self] {
      self->wake_posted_ = false;
      self->Pump();
    });
  }

  std::shared_ptr<Connection> Self() {
    return std::static_pointer_cast<Connection>(shared_from_this());
  }

  auto& lowest() { return stream_.lowest_layer(); }

  void DoStart() {
    if (closed_) return;
    started_at_ = Clock::now();
    if constexpr (kIsTls<Stream>) {
      UpdateTimer();
      stream_.async_handshake(ssl::stream_base::server,
                              [self = Self()](const error_code& ec) { self->OnHandshake(ec); });
    } else {
      Read();
      UpdateTimer();
    }
  }

  void OnHandshake(const error_code& ec) {
    if (closed_) return;
    if (ec) {
      Close();
      return;
    }
    if constexpr (kIsTls<Stream>) {
      const unsigned char* alpn = nullptr;
      unsigned int alpn_len = 0;
      SSL_get0_alpn_selected(stream_.native_handle(), &alpn, &alpn_len);
      std::string_view protocol(reinterpret_cast<const char*>(alpn), alpn_len);
      if (protocol == "h2") {
        CreateSession(/*http2=*/true);
      } else if (protocol == "http/1.1") {
        CreateSession(/*http2=*/false);
      }
      // No ALPN: the first bytes decide, as on plain TCP.
    }
    Read();
    UpdateTimer();
  }

  void CreateSession(bool http2) {
    session_ = http2 ? internal::MakeHttp2Session(this, config_.engine, config_.limits)
                     : internal::MakeHttp1Session(this, config_.engine, config_.limits);
    // The first request's read timeout runs from the accept, not from protocol detection.
    phase_ = internal::Session::TimerKind::kRead;
    read_started_ = started_at_;
  }

  void CloseSession() {
    if (session_ == nullptr || session_closed_) return;
    session_closed_ = true;
    session_->OnClose();
  }

  void Read() {
    if (closed_ || reading_) return;
    if (!closing_) {
      if (read_stopped_) return;
      if (session_ != nullptr && !session_->WantsRead()) return;
    }
    reading_ = true;
    stream_.async_read_some(
        asio::buffer(read_buf_),
        [self = Self()](const error_code& ec, size_t n) { self->OnRead(ec, n); });
  }

  void OnRead(const error_code& ec, size_t n) {
    reading_ = false;
    if (closed_) return;
    if (closing_) {
      // Lingering: discard until the peer's EOF, an error, or the timer.
      if (ec == asio::error::operation_aborted && !finish_started_) {
        FinishClose();
      } else if (ec) {
        Close();
      } else {
        Read();
      }
      return;
    }
    if (ec) {
      Close();  // EOF, reset or timeout-cancel: the peer is gone
      return;
    }
    last_activity_ = Clock::now();
    std::string_view data(read_buf_.data(), n);
    base::Status status;
    if (session_ == nullptr) {
      preface_.append(data);
      size_t m = std::min(preface_.size(), kH2Preface.size());
      bool matches = std::string_view(preface_).substr(0, m) == kH2Preface.substr(0, m);
      if (matches && preface_.size() < kH2Preface.size()) {
        // Could still become the h2 preface: wait for more.
        Read();
        UpdateTimer();
        return;
      }
      CreateSession(/*http2=*/matches);
      std::string first = std::move(preface_);
      preface_.clear();
      status = session_->OnReadable(first);
    } else {
      status = session_->OnReadable(data);
    }
    if (!status.ok()) read_stopped_ = true;
    Pump();
  }

  // Moves the session's output to the socket, one write at a time; closes when the session is
  // done. Runs after every event that may have produced output or changed the session's state.
  void Pump() {
    wake_on_strand_ = false;  // this Pump serves every wake noted so far
    PumpOnce();
    if (wake_on_strand_ && !closed_) {
      wake_on_strand_ = false;
      PostPump();
    }
  }

  void PumpOnce() {
    if (closed_ || closing_ || session_ == nullptr) return;
    if (writing_) {
      UpdateTimer();
      return;
    }
    std::string out = std::move(spare_buf_);
    out.clear();
    session_->CollectOutput(&out);
    if (out.empty()) {
      spare_buf_ = std::move(out);
    } else {
      writing_ = true;
      write_started_ = Clock::now();
      write_buf_ = std::move(out);
      asio::async_write(stream_, asio::buffer(write_buf_),
                        [self = Self()](const error_code& ec, size_t) { self->OnWrite(ec); });
      Read();
      UpdateTimer();
      return;
    }
    if (session_->ShouldClose() || (read_stopped_ && !session_->Busy())) {
      GracefulClose();
      return;
    }
    Read();
    UpdateTimer();
  }

  void OnWrite(const error_code& ec) {
    writing_ = false;
    // The buffer is kept for the next response unless it grew large (a big download).
    write_buf_.clear();
    if (write_buf_.capacity() <= kKeepWriteBufBytes) spare_buf_ = std::move(write_buf_);
    write_buf_ = std::string();
    if (closed_) return;
    if (ec) {
      Close();
      return;
    }
    last_activity_ = Clock::now();
    Pump();
  }

  // Flushed and done: let the peer read the last response, then close.
  void GracefulClose() {
    if (closing_ || closed_) return;
    closing_ = true;
    close_deadline_ = Clock::now() + std::min<Clock::duration>(kLingerMax, config_.read_timeout);
    UpdateTimer();
    if (reading_) {
      // The session's read must end first (TLS cannot shut down under an outstanding read);
      // OnRead sees operation_aborted and continues in FinishClose.
      error_code ignored;
      lowest().cancel(ignored);
    } else {
      FinishClose();
    }
  }

  void FinishClose() {
    if (finish_started_ || closed_) return;
    finish_started_ = true;
    CloseSession();
    if constexpr (kIsTls<Stream>) {
      stream_.async_shutdown([self = Self()](const error_code&) { self->Close(); });
    } else {
      error_code ignored;
      lowest().shutdown(asio::socket_base::shutdown_send, ignored);
      Read();  // until EOF
    }
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    CloseSession();
    error_code ignored;
    timer_.cancel();
    lowest().shutdown(asio::socket_base::shutdown_both, ignored);
    lowest().close(ignored);
    config_.registry->Remove(this);
  }

  // Re-arms the single timer for the deadline the current state calls for.
  void UpdateTimer() {
    if (closed_) return;
    Clock::time_point now = Clock::now();
    Clock::time_point deadline = Clock::time_point::max();
    if (closing_) {
      deadline = close_deadline_;
    } else if (session_ == nullptr) {
      // Handshake and protocol detection: the first request is due within the read timeout.
      deadline = started_at_ + config_.read_timeout;
    } else {
      using Kind = internal::Session::TimerKind;
      Kind kind = session_->timer_kind();
      if (kind == Kind::kRead && (!phase_ || *phase_ != Kind::kRead)) read_started_ = now;
      phase_ = kind;
      if (kind == Kind::kRead) {
        deadline = read_started_ + config_.read_timeout;
      } else if (kind == Kind::kIdle) {
        deadline = last_activity_ + config_.idle_timeout;
      }
      if (writing_) {
        // A peer that stops reading must not hold the connection (and a blocked handler)
        // forever.
        deadline = std::min<Clock::time_point>(
            deadline, write_started_ + std::max(config_.read_timeout, config_.idle_timeout));
      }
    }
    deadline_ = deadline;
    if (deadline_ == Clock::time_point::max()) return;  // a pending wait re-checks when it fires
    if (timer_armed_ && timer_expiry_ <= deadline_) return;
    timer_armed_ = true;
    timer_expiry_ = deadline_;
    timer_.expires_at(deadline_);
    timer_.async_wait([self = Self()](const error_code& ec) { self->OnTimer(ec); });
  }

  void OnTimer(const error_code& ec) {
    if (ec == asio::error::operation_aborted || closed_) return;
    timer_armed_ = false;
    if (Clock::now() >= deadline_) {
      Close();
    } else {
      UpdateTimer();
    }
  }

  const ConnectionConfig& config_;
  Strand strand_;
  Stream stream_;
  asio::steady_timer timer_;
  const std::string peer_;
  std::atomic<bool> wake_posted_{false};

  // Strand only.
  std::array<char, kReadChunk> read_buf_;
  std::string write_buf_;
  std::string spare_buf_;  // an empty buffer whose capacity the next Pump reuses
  std::string preface_;    // first bytes, until the protocol is known
  bool reading_ = false;
  bool writing_ = false;
  bool wake_on_strand_ = false;  // WakeWriter ran on the strand since the last Pump began
  bool read_stopped_ = false;    // the session reported a protocol error
  bool closing_ = false;         // flushed; lingering before close
  bool finish_started_ = false;
  bool session_closed_ = false;
  bool closed_ = false;
  bool timer_armed_ = false;
  Clock::time_point timer_expiry_;
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point started_at_ = Clock::now();
  Clock::time_point last_activity_ = Clock::now();
  Clock::time_point read_started_;
  Clock::time_point write_started_;
  Clock::time_point close_deadline_;
  std::optional<internal::Session::TimerKind> phase_;
  // Last member: destroyed first, while the rest of the connection is still whole.
  std::unique_ptr<internal::Session> session_;
};

// One listening socket and its accept loop, on its own strand.
template <typename Protocol>
class Acceptor : public std::enable_shared_from_this<Acceptor<Protocol>> {
 public:
  using Endpoint = typename Protocol::endpoint;

  Acceptor(asio::io_context& ioc, const ConnectionConfig& config, ssl::context* tls)
      : ioc_(ioc),
        config_(config),
        tls_(tls),
        strand_(asio::make_strand(ioc)),
        acceptor_(strand_),
        retry_timer_(strand_) {}

  // Binds and listens. unavailable (with the address and the OS error) on failure.
  base::Status Bind(const Endpoint& endpoint, const std::string& address) {
    error_code ec;
    auto fail = [&](std::string_view what) {
      return base::UnavailableError("Cannot " + std::string(what) + " " + address + ": " +
                                    ec.message());
    };
    acceptor_.open(endpoint.protocol(), ec);
    if (ec) return fail("open a socket for");
    if constexpr (std::is_same_v<Protocol, tcp>) {
      acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
      if (ec) return fail("configure");
    }
    acceptor_.bind(endpoint, ec);
    if (ec) return fail("bind");
    acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return fail("listen on");
    return base::OkStatus();
  }

  Endpoint local_endpoint() const {
    error_code ec;
    return acceptor_.local_endpoint(ec);
  }

  void Start() {
    asio::dispatch(strand_, [self = this->shared_from_this()] { self->Accept(); });
  }

  // Any thread while io threads run; posts.
  void Stop() {
    asio::post(strand_, [self = this->shared_from_this()] { self->CloseNow(); });
  }

  // REQUIRES: on strand_, or no io thread runs.
  void CloseNow() {
    error_code ignored;
    stopped_ = true;
    retry_timer_.cancel();
    acceptor_.close(ignored);
  }

 private:
  void Accept() {
    if (stopped_) return;
    auto strand = asio::make_strand(ioc_);
    acceptor_.async_accept(strand, [self = this->shared_from_this(), strand](
                                       const error_code& ec, typename Protocol::socket socket) {
      self->OnAccept(ec, strand, std::move(socket));
    });
  }

  void OnAccept(const error_code& ec, Strand strand, typename Protocol::socket socket) {
    if (stopped_ || ec == asio::error::operation_aborted) return;
    if (ec) {
      // Out of file descriptors or similar: back off instead of spinning.
      retry_timer_.expires_after(std::chrono::milliseconds(100));
      retry_timer_.async_wait([self = this->shared_from_this()](const error_code& wait_ec) {
        if (!wait_ec) self->Accept();
      });
      return;
    }
    std::shared_ptr<ConnectionBase> connection;
    if constexpr (std::is_same_v<Protocol, tcp>) {
      error_code peer_ec;
      tcp::endpoint remote = socket.remote_endpoint(peer_ec);
      std::string peer = peer_ec ? std::string("unknown") : FormatEndpoint(remote);
      socket.set_option(tcp::no_delay(true), peer_ec);
      if (tls_ != nullptr) {
        connection = std::make_shared<Connection<ssl::stream<tcp::socket>>>(
            config_, strand, ssl::stream<tcp::socket>(std::move(socket), *tls_), peer);
      } else {
        connection =
            std::make_shared<Connection<tcp::socket>>(config_, strand, std::move(socket), peer);
      }
    } else {
      connection =
          std::make_shared<Connection<local::socket>>(config_, strand, std::move(socket), "unix");
    }
    if (config_.registry->Add(connection)) {
      connection->Start();
    } else {
      connection->ForceClose();
    }
    Accept();
  }

  asio::io_context& ioc_;
  const ConnectionConfig& config_;
  ssl::context* tls_;  // null: plain
  Strand strand_;
  typename Protocol::acceptor acceptor_;
  asio::steady_timer retry_timer_;
  bool stopped_ = false;  // strand only
};

class ServerImpl final : public Server {
 public:
  ServerImpl(ServerOptions options, std::shared_ptr<const Router> router)
      : options_(std::move(options)),
        engine_(std::make_unique<internal::Engine>(
            std::move(router),
            internal::EngineOptions{options_.max_message_bytes, options_.handler_threads,
                                    options_.max_pending_calls})),
        work_(asio::make_work_guard(ioc_)) {
    config_.engine = engine_.get();
    config_.limits.max_message_bytes = options_.max_message_bytes;
    config_.limits.max_header_bytes = options_.max_header_bytes;
    config_.limits.max_header_count = options_.max_header_count;
    config_.limits.max_concurrent_streams = options_.max_concurrent_streams;
    config_.limits.write_stall_timeout = options_.write_stall_timeout;
    config_.read_timeout = options_.read_timeout;
    config_.idle_timeout = options_.idle_timeout;
    config_.registry = &registry_;
    registry_.set_max_live(options_.max_connections);
  }

  ~ServerImpl() override { Shutdown(std::chrono::milliseconds(0)); }

  base::Status Init() {
    if (options_.listen.empty()) return base::InvalidArgumentError("No listen address");
    std::vector<ListenSpec> specs;
    for (const std::string& text : options_.listen) {
      ASSIGN_OR_RETURN(ListenSpec spec, ParseListenAddress(text));
      specs.push_back(std::move(spec));
    }
    if (options_.tls) {
      ASSIGN_OR_RETURN(tls_, MakeTlsContext(*options_.tls));
    }
    for (const ListenSpec& spec : specs) {
      if (spec.is_unix) {
        // A socket left by an earlier run would make bind fail; anything else at that path
        // is not ours to remove.
        struct stat st;
        if (::lstat(spec.unix_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
          ::unlink(spec.unix_path.c_str());
        }
        auto acceptor = std::make_shared<Acceptor<local>>(ioc_, config_, nullptr);
        RETURN_IF_ERROR(acceptor->Bind(local::endpoint(spec.unix_path), spec.text));
        unix_paths_.push_back(spec.unix_path);
        addresses_.push_back("unix:" + spec.unix_path);
        unix_acceptors_.push_back(std::move(acceptor));
      } else {
        auto acceptor = std::make_shared<Acceptor<tcp>>(ioc_, config_, tls_.get());
        RETURN_IF_ERROR(acceptor->Bind(spec.tcp_endpoint, spec.text));
        addresses_.push_back(FormatEndpoint(acceptor->local_endpoint()));
        tcp_acceptors_.push_back(std::move(acceptor));
      }
    }
    return base::OkStatus();
  }

  void Run() {
    for (auto& a : tcp_acceptors_) a->Start();
    for (auto& a : unix_acceptors_) a->Start();
    int n = std::max(1, options_.io_threads);
    for (int i = 0; i < n; ++i) {
      threads_.emplace_back([this] {
        for (;;) {
          try {
            ioc_.run();
            return;
          } catch (const std::exception&) {
            // A handler threw (e.g. bad_alloc): keep the other connections served.
          }
        }
      });
    }
  }

  std::vector<std::string> addresses() const override { return addresses_; }

  void Shutdown(std::chrono::milliseconds grace) override {
    if (shut_down_) return;
    shut_down_ = true;
    for (auto& a : tcp_acceptors_) a->Stop();
    for (auto& a : unix_acceptors_) a->Stop();
    for (auto& c : registry_.Stop()) c->BeginShutdown();
    if (!threads_.empty()) {
      registry_.WaitEmpty(Clock::now() + grace);
      engine_->CancelAll(base::UnavailableError("Server is shutting down"));
      for (auto& c : registry_.Live()) c->ForceClose();
      // Closing is immediate on each strand; the bound only guards against a stuck io thread.
      registry_.WaitEmpty(Clock::now() + std::chrono::seconds(5));
    }
    work_.reset();
    ioc_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    for (auto& c : registry_.Live()) c->CloseNowForShutdown();
    registry_.Clear();
    for (auto& a : tcp_acceptors_) a->CloseNow();
    for (auto& a : unix_acceptors_) a->CloseNow();
    for (const std::string& path : unix_paths_) ::unlink(path.c_str());
  }

 private:
  const ServerOptions options_;
  // Destroyed last: handlers still running hold writers whose sessions are gone by then.
  std::unique_ptr<internal::Engine> engine_;
  ConnectionConfig config_;
  Registry registry_;
  std::unique_ptr<ssl::context> tls_;
  asio::io_context ioc_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::vector<std::shared_ptr<Acceptor<tcp>>> tcp_acceptors_;
  std::vector<std::shared_ptr<Acceptor<local>>> unix_acceptors_;
  std::vector<std::string> unix_paths_;
  std::vector<std::string> addresses_;  // constant after Init
  std::vector<std::thread> threads_;
  bool shut_down_ = false;  // owner thread only
};

}  // namespace

base::Result<std::unique_ptr<Server>> Server::Start(ServerOptions options,
                                                    std::shared_ptr<const Router> router) {
  if (router == nullptr) return base::InvalidArgumentError("Server needs a router");
  try {
    auto server = std::make_unique<ServerImpl>(std::move(options), std::move(router));
    RETURN_IF_ERROR(server->Init());
    server->Run();
    return std::unique_ptr<Server>(std::move(server));
  } catch (const std::exception& e) {
    return base::InternalError(std::string("Cannot start server: ") + e.what());
  }
}

}  // namespace metald::rpc

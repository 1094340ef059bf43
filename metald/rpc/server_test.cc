// A real Server on loopback TCP and a unix socket, driven by raw sockets (and raw OpenSSL for
// TLS), so that what is checked is the bytes a client sees.

#include "metald/rpc/server.h"

#include <arpa/inet.h>
#include <google/protobuf/wrappers.pb.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "metald/rpc/testing/test_methods.h"

namespace metald::rpc {
namespace {

namespace http = boost::beast::http;
using google::protobuf::StringValue;
using Response = http::response<http::string_body>;
using namespace std::chrono_literals;

// Hang guard for every read, not a timing assertion.
constexpr auto kIoTimeout = 20s;

// Parses one complete response at the start of `bytes`; nullopt while incomplete.
std::optional<Response> ParseResponse(std::string_view bytes, size_t* used = nullptr) {
  http::response_parser<http::string_body> parser;
  parser.eager(true);
  boost::beast::error_code ec;
  size_t n = parser.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
  if (ec || !parser.is_done()) return std::nullopt;
  if (used != nullptr) *used = n;
  return parser.release();
}

// A blocking client socket with a receive timeout (so a broken server fails the test instead
// of hanging it).
class RawClient {
 public:
  static RawClient Connect(const std::string& address) {
    RawClient c;
    if (address.starts_with("unix:")) {
      c.fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      std::string path = address.substr(5);
      std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
      c.connected_ = ::connect(c.fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
    } else {
      size_t colon = address.rfind(':');
      c.fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
      ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr);
      c.connected_ = ::connect(c.fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
    }
    timeval tv{};
    tv.tv_sec = std::chrono::duration_cast<std::chrono::seconds>(kIoTimeout).count();
    ::setsockopt(c.fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return c;
  }
  RawClient() = default;
  RawClient(RawClient&& o) noexcept { *this = std::move(o); }
  RawClient& operator=(RawClient&& o) noexcept {
    std::swap(fd_, o.fd_);
    connected_ = o.connected_;
    closed_ = o.closed_;
    buf_ = std::move(o.buf_);
    return *this;
  }
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }

  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  void Send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      data.remove_prefix(static_cast<size_t>(n));
    }
  }

  // Reads once into buf_; false on EOF, error or timeout.
  bool ReadSome() {
    char chunk[16384];
    ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n <= 0) {
      closed_ = n == 0 || errno == ECONNRESET;
      return false;
    }
    buf_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  // The next complete response, or nullopt on EOF/timeout first.
  std::optional<Response> ReadResponse() {
    for (;;) {
      size_t used = 0;
      if (auto r = ParseResponse(buf_, &used)) {
        buf_.erase(0, used);
        return r;
      }
      if (!ReadSome()) return std::nullopt;
    }
  }

  // Reads until the server closes; true if it did (false on timeout).
  bool WaitClosed() {
    while (ReadSome()) {
    }
    return closed_;
  }

  const std::string& buffered() const { return buf_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string buf_;
};

std::string RunCommand(const std::string& cmd) {
  int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
  return rc == 0 ? "" : "command failed: " + cmd;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/metald-srv-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    // A CA, a server cert and a client cert, EC keys (fast to generate).
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for (const std::string& cmd : {
             "openssl req -x509 " + key + " -keyout " + dir_ + "/ca.key -out " + dir_ +
                 "/ca.crt -days 2 -subj /CN=test-ca",
             "openssl req " + key + " -keyout " + dir_ + "/server.key -out " + dir_ +
                 "/server.csr -subj /CN=localhost",
             "openssl x509 -req -in " + dir_ + "/server.csr -CA " + dir_ + "/ca.crt -CAkey " +
                 dir_ + "/ca.key -CAcreateserial -out " + dir_ + "/server.crt -days 2",
             "openssl req " + key + " -keyout " + dir_ + "/client.key -out " + dir_ +
                 "/client.csr -subj /CN=client",
             "openssl x509 -req -in " + dir_ + "/client.csr -CA " + dir_ + "/ca.crt -CAkey " +
                 dir_ + "/ca.key -CAcreateserial -out " + dir_ + "/client.crt -days 2",
         }) {
      ASSERT_EQ(RunCommand(cmd), "");
    }
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }

  void SetUp() override {
    auto router = std::make_shared<Router>();
    ASSERT_TRUE(router->AddHttpRoute("/healthz", testing::TextRoute("ok")).ok());
    ASSERT_TRUE(router
                    ->AddHttpRoute("/slow",
                                   [this](const HttpRequest&) {
                                     slow_entered_.Open();
                                     slow_gate_.Wait();
                                     HttpResponse r;
                                     r.body = "slow";
                                     return r;
                                   })
                    .ok());
    ASSERT_TRUE(router->AddMethod(testing::SayMethod()).ok());
    MethodHandler wait;
    wait.desc = MethodDesc{"test.Echo", "Wait", "/test.Echo/Wait", MethodKind::kServerStreaming};
    wait.request_prototype = &StringValue::default_instance();
    wait.response_prototype = &StringValue::default_instance();
    wait.stream = [this](CallContext& ctx, const google::protobuf::Message&, StreamWriter& writer) {
      StringValue msg;
      msg.set_value("started");
      base::Status st = writer.Write(msg);
      if (!st.ok()) return st;
      if (ctx.cancel_token().WaitFor(kIoTimeout)) wait_saw_cancel_ = true;
      return base::OkStatus();
    };
    ASSERT_TRUE(router->AddMethod(std::move(wait)).ok());
    router_ = router;
  }

  void TearDown() override {
    slow_gate_.Open();
    if (server_) server_->Shutdown(0ms);
  }

  void StartServer(ServerOptions options) {
    options.handler_threads = 4;
    options.io_threads = 2;
    auto server = Server::Start(std::move(options), router_);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
  }

  static std::string Get(const std::string& path, std::string_view extra = "") {
    return "GET " + path + " HTTP/1.1\r\nHost: test\r\n" + std::string(extra) + "\r\n";
  }
  static std::string PostSay(const std::string& json) {
    return "POST /test.Echo/Say HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
           "Content-Length: " +
           std::to_string(json.size()) + "\r\n\r\n" + json;
  }

  static inline std::string dir_;
  std::shared_ptr<const Router> router_;
  std::unique_ptr<Server> server_;
  testing::Gate slow_gate_{kIoTimeout};
  testing::Gate slow_entered_{kIoTimeout};
  std::atomic<bool> wait_saw_cancel_{false};
};

TEST_F(ServerTest, ServesHttpAndRpcOnTcpAndUnix) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0", "unix:" + dir_ + "/a.sock"};
  StartServer(options);
  std::vector<std::string> addrs = server_->addresses();
  ASSERT_EQ(addrs.size(), 2u);
  EXPECT_TRUE(addrs[0].starts_with("127.0.0.1:"));
  EXPECT_NE(addrs[0], "127.0.0.1:0");
  EXPECT_EQ(addrs[1], "unix:" + dir_ + "/a.sock");
  for (const std::string& addr : addrs) {
    SCOPED_TRACE(addr);
    RawClient c = RawClient::Connect(addr);
    ASSERT_TRUE(c.connected());
    // Keep-alive: two requests on one connection.
    c.Send(Get("/healthz"));
    auto r = c.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->result_int(), 200);
    EXPECT_EQ(r->body(), "ok");
    c.Send(PostSay("\"unix and tcp\""));
    r = c.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->result_int(), 200);
    EXPECT_EQ(r->body(), "\"hello unix and tcp\"");
    EXPECT_EQ((*r)[http::field::content_type], "application/json");
  }
}

TEST_F(ServerTest, RejectsBadListenAddresses) {
  for (std::string bad : {"nonsense", "1.2.3.4", "127.0.0.1:99999", "127.0.0.1:x", "[::1:80",
                          "::1:80", "unix:", "localhost:80", "[127.0.0.1]:80"}) {
    SCOPED_TRACE(bad);
    ServerOptions options;
    options.listen = {bad};
    auto server = Server::Start(options, router_);
    ASSERT_FALSE(server.ok());
    EXPECT_EQ(server.status().code(), base::StatusCode::kInvalidArgument);
    EXPECT_NE(server.status().message().find(bad), std::string::npos) << server.status().message();
  }
}

TEST_F(ServerTest, BindConflictIsUnavailable) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0"};
  StartServer(options);
  ServerOptions second;
  second.listen = {server_->addresses()[0]};
  auto server = Server::Start(second, router_);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), base::StatusCode::kUnavailable);
  EXPECT_NE(server.status().message().find(server_->addresses()[0]), std::string::npos);
  EXPECT_NE(server.status().message().find("in use"), std::string::npos)
      << server.status().message();
}

TEST_F(ServerTest, Ipv6Loopback) {
  ServerOptions options;
  options.listen = {"[::1]:0"};
  auto server = Server::Start(options, router_);
  if (!server.ok()) GTEST_SKIP() << "no IPv6 loopback: " << server.status().ToString();
  EXPECT_TRUE(server.value()->addresses()[0].starts_with("[::1]:"));
}

TEST_F(ServerTest, H2cPrefaceSelectsHttp2) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0"};
  StartServer(options);
  RawClient c = RawClient::Connect(server_->addresses()[0]);
  // Preface in two pieces (the first a prefix of "PRI * HTTP/1.1"-like text), then SETTINGS.
  c.Send("PRI * HTTP/2");
  std::this_thread::sleep_for(20ms);
  c.Send(std::string(".0\r\n\r\nSM\r\n\r\n") +
         std::string("\x00\x00\x00\x04\x00\x00\x00\x00\x00", 9));
  while (c.buffered().size() < 9 && c.ReadSome()) {
  }
  ASSERT_GE(c.buffered().size(), 9u);
  EXPECT_EQ(c.buffered()[3], '\x04');  // the server's SETTINGS frame
  EXPECT_EQ(c.buffered().find("HTTP/1.1"), std::string::npos);
}

TEST_F(ServerTest, PrefixLikeRequestStaysHttp1) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0"};
  StartServer(options);
  RawClient c = RawClient::Connect(server_->addresses()[0]);
  c.Send("PRI * HTTP/1.1\r\n\r\n");  // diverges from the h2 preface at "1"
  auto r = c.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 404);
}

TEST_F(ServerTest, SlowLorisIsClosedByReadTimeout) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0"};
  options.read_timeout = 300ms;
  options.idle_timeout = 60s;
  StartServer(options);
  RawClient half = RawClient::Connect(server_->addresses()[0]);
  half.Send("GET /healthz HTTP/1.1\r\nHo");
  RawClient silent = RawClient::Connect(server_->addresses()[0]);
  EXPECT_TRUE(half.WaitClosed());
  EXPECT_EQ(half.buffered(), "");
  EXPECT_TRUE(silent.WaitClosed());
}

TEST_F(ServerTest, SlowTrickleIsClosedByReadTimeout) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0"};
  options.read_timeout = 300ms;
  StartServer(options);
  RawClient c = RawClient::Connect(server_->addresses()[0]);
  // One byte every 50 ms never completes a request within the read timeout, even though
  // bytes keep coming.
  std::string request = Get("/healthz", std::string(200, 'x').insert(0, "X-Pad: ") + "\r\n");
  bool closed = false;
  for (char ch : request) {
    c.Send(std::string_view(&ch, 1));
    pollfd p{c.fd(), POLLIN, 0};
    if (::poll(&p, 1, 50) > 0) {
      closed = c.WaitClosed();
      break;
    }
  }
  EXPECT_TRUE(closed);
  EXPECT_EQ(c.buffered(), "");
}

TEST_F(ServerTest, IdleKeepAliveConnectionIsClosed) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0"};
  options.read_timeout = 60s;
  options.idle_timeout = 300ms;
  StartServer(options);
  RawClient c = RawClient::Connect(server_->addresses()[0]);
  c.Send(Get("/healthz"));
  auto r = c.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200);
  EXPECT_TRUE(c.WaitClosed());
}

TEST_F(ServerTest, ConnectionsBeyondTheLimitAreClosed) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0"};
  options.max_connections = 2;
  StartServer(options);
  const std::string address = server_->addresses()[0];
  RawClient first = RawClient::Connect(address);
  RawClient second = RawClient::Connect(address);
  // Served connections answer, so both are registered before the third arrives.
  for (RawClient* c : {&first, &second}) {
    c->Send(Get("/healthz"));
    auto r = c->ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->result_int(), 200);
  }
  RawClient third = RawClient::Connect(address);
  ASSERT_TRUE(third.connected());  // The kernel accepts; the server closes it at once.
  third.Send(Get("/healthz"));
  EXPECT_FALSE(third.ReadResponse());
  EXPECT_TRUE(third.WaitClosed());
  // Closing one makes room again (the server notices the close asynchronously).
  first = RawClient();
  bool served = false;
  for (int attempt = 0; attempt < 200 && !served; ++attempt) {
    RawClient again = RawClient::Connect(address);
    again.Send(Get("/healthz"));
    served = again.ReadResponse().has_value();
    if (!served) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(served);
}

TEST_F(ServerTest, SlowHandlerIsNotCutByTimers) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0"};
  options.read_timeout = 200ms;
  options.idle_timeout = 200ms;
  StartServer(options);
  RawClient c = RawClient::Connect(server_->addresses()[0]);
  c.Send(Get("/slow"));
  ASSERT_TRUE(slow_entered_.Wait());
  std::this_thread::sleep_for(1s);  // several times both timeouts
  slow_gate_.Open();
  auto r = c.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body(), "slow");
}

TEST_F(ServerTest, OversizedBodyGetsErrorThenClose) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0"};
  options.max_message_bytes = 1024;
  StartServer(options);
  RawClient c = RawClient::Connect(server_->addresses()[0]);
  std::string body(100 * 1024, 'x');
  c.Send(
      "POST /test.Echo/Say HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n");
  c.Send(body);
  auto r = c.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 429);
  EXPECT_FALSE(r->keep_alive());
  EXPECT_TRUE(c.WaitClosed());
}

// --- TLS -------------------------------------------------------------------------------------

struct TlsClient {
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  RawClient raw;
  bool handshake_ok = false;

  TlsClient(const std::string& address, std::string_view alpn, const std::string& cert = "",
            const std::string& key = "") {
    ctx = SSL_CTX_new(TLS_client_method());
    if (!cert.empty()) {
      SSL_CTX_use_certificate_file(ctx, cert.c_str(), SSL_FILETYPE_PEM);
      SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM);
    }
    raw = RawClient::Connect(address);
    ssl = SSL_new(ctx);
    if (!alpn.empty()) {
      SSL_set_alpn_protos(ssl, reinterpret_cast<const unsigned char*>(alpn.data()),
                          static_cast<unsigned>(alpn.size()));
    }
    SSL_set_fd(ssl, raw.fd());
    handshake_ok = SSL_connect(ssl) == 1;
  }
  ~TlsClient() {
    SSL_free(ssl);
    SSL_CTX_free(ctx);
  }
  std::string alpn() const {
    const unsigned char* p = nullptr;
    unsigned int n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    return std::string(reinterpret_cast<const char*>(p), n);
  }
  // Sends a request and reads one response; nullopt when the connection fails first.
  std::optional<Response> Exchange(const std::string& request) {
    if (SSL_write(ssl, request.data(), static_cast<int>(request.size())) <= 0) return std::nullopt;
    std::string buf;
    char chunk[16384];
    for (;;) {
      if (auto r = ParseResponse(buf)) return r;
      int n = SSL_read(ssl, chunk, sizeof(chunk));
      if (n <= 0) return std::nullopt;
      buf.append(chunk, static_cast<size_t>(n));
    }
  }
};

TEST_F(ServerTest, TlsWithAlpn) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0", "unix:" + dir_ + "/tls-plain.sock"};
  options.tls = TlsOptions{dir_ + "/server.crt", dir_ + "/server.key", "", false};
  StartServer(options);
  {
    TlsClient c(server_->addresses()[0], std::string_view("\x08http/1.1", 9));
    ASSERT_TRUE(c.handshake_ok);
    EXPECT_EQ(c.alpn(), "http/1.1");
    auto r = c.Exchange(Get("/healthz"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body(), "ok");
    r = c.Exchange(PostSay("\"tls\""));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body(), "\"hello tls\"");
    // Connection: close ends in a TLS close (close_notify or EOF), not a hang.
    r = c.Exchange(Get("/healthz", "Connection: close\r\n"));
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->keep_alive());
    char byte;
    EXPECT_LE(SSL_read(c.ssl, &byte, 1), 0);
  }
  {
    TlsClient c(server_->addresses()[0], std::string_view("\x02h2\x08http/1.1", 12));
    ASSERT_TRUE(c.handshake_ok);
    EXPECT_EQ(c.alpn(), "h2");
  }
  {
    TlsClient c(server_->addresses()[0], "");  // no ALPN: HTTP/1.1 by its first bytes
    ASSERT_TRUE(c.handshake_ok);
    auto r = c.Exchange(Get("/healthz"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body(), "ok");
  }
  {
    // The unix socket stays plain.
    RawClient c = RawClient::Connect(server_->addresses()[1]);
    c.Send(Get("/healthz"));
    auto r = c.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body(), "ok");
  }
  {
    // Plain HTTP on the TLS port gets no HTTP response.
    RawClient c = RawClient::Connect(server_->addresses()[0]);
    c.Send(Get("/healthz"));
    EXPECT_FALSE(c.ReadResponse());
  }
}

TEST_F(ServerTest, MutualTls) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0"};
  options.tls = TlsOptions{dir_ + "/server.crt", dir_ + "/server.key", dir_ + "/ca.crt", true};
  StartServer(options);
  {
    TlsClient c(server_->addresses()[0], std::string_view("\x08http/1.1", 9));
    // TLS 1.3 reports the refusal after the client's handshake completes: on the first read.
    EXPECT_FALSE(c.handshake_ok && c.Exchange(Get("/healthz")).has_value());
  }
  {
    TlsClient c(server_->addresses()[0], std::string_view("\x08http/1.1", 9), dir_ + "/client.crt",
                dir_ + "/client.key");
    ASSERT_TRUE(c.handshake_ok);
    auto r = c.Exchange(Get("/healthz"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body(), "ok");
  }
}

TEST_F(ServerTest, BadTlsFilesAreInvalidArgument) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0"};
  options.tls = TlsOptions{dir_ + "/missing.crt", dir_ + "/server.key", "", false};
  auto server = Server::Start(options, router_);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), base::StatusCode::kInvalidArgument);
  EXPECT_NE(server.status().message().find("missing.crt"), std::string::npos);

  options.tls = TlsOptions{dir_ + "/server.crt", dir_ + "/client.key", "", false};
  server = Server::Start(options, router_);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), base::StatusCode::kInvalidArgument);
}

// --- Shutdown --------------------------------------------------------------------------------

TEST_F(ServerTest, ShutdownLetsInFlightCallFinishWithinGrace) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0", "unix:" + dir_ + "/shut.sock"};
  StartServer(options);
  std::string address = server_->addresses()[0];
  RawClient busy = RawClient::Connect(address);
  busy.Send(Get("/slow"));
  ASSERT_TRUE(slow_entered_.Wait());
  RawClient idle = RawClient::Connect(address);
  idle.Send(Get("/healthz"));
  ASSERT_TRUE(idle.ReadResponse());

  std::thread shutdown([&] { server_->Shutdown(20s); });
  EXPECT_TRUE(idle.WaitClosed());  // nothing in flight: closed at once
  slow_gate_.Open();
  auto r = busy.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body(), "slow");
  EXPECT_FALSE(r->keep_alive());
  EXPECT_TRUE(busy.WaitClosed());
  shutdown.join();
  server_->Shutdown(0ms);  // idempotent
  EXPECT_FALSE(RawClient::Connect(address).connected());
  struct stat st;
  EXPECT_NE(::stat((dir_ + "/shut.sock").c_str(), &st), 0);  // unix socket removed
}

TEST_F(ServerTest, ShutdownCancelsCallsAfterGrace) {
  ServerOptions options;
  options.listen = {"127.0.0.1:0"};
  StartServer(options);
  RawClient c = RawClient::Connect(server_->addresses()[0]);
  std::string body("\0\0\0\0\x02\"\"", 7);
  c.Send(
      "POST /test.Echo/Wait HTTP/1.1\r\nHost: t\r\nContent-Type: application/connect+json\r\n"
      "Content-Length: 7\r\n\r\n" +
      body);
  while (c.buffered().find("started") == std::string::npos && c.ReadSome()) {
  }
  ASSERT_NE(c.buffered().find("started"), std::string::npos);
  server_->Shutdown(100ms);
  // The handler runs on its own thread: give it a (generous) moment to observe the cancel.
  for (int i = 0; i < 2000 && !wait_saw_cancel_; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_TRUE(wait_saw_cancel_.load());
  EXPECT_TRUE(c.WaitClosed());
}

TEST_F(ServerTest, StaleUnixSocketIsReplaced) {
  std::string path = dir_ + "/stale.sock";
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ::close(fd);  // leaves the socket file behind, as a crashed daemon would
  ServerOptions options;
  options.listen = {"unix:" + path};
  StartServer(options);
  RawClient c = RawClient::Connect("unix:" + path);
  c.Send(Get("/healthz"));
  auto r = c.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body(), "ok");

  // A regular file at the path is not ours to delete.
  std::string file = dir_ + "/not-a-socket";
  std::ofstream(file) << "data";
  ServerOptions other;
  other.listen = {"unix:" + file};
  auto server = Server::Start(other, router_);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), base::StatusCode::kUnavailable);
  EXPECT_TRUE(std::filesystem::exists(file));
}

}  // namespace
}  // namespace metald::rpc

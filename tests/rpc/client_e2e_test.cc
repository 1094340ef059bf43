// Our Connect client (metald/rpc/client.h) against an in-process rpc::Server serving the echo
// service, over HTTP/1.1 and h2c, TCP and unix sockets, proto and JSON.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "metald/rpc/client.h"
#include "metald/rpc/health.h"
#include "metald/rpc/server.h"
#include "tests/rpc/echo_service.h"

namespace metald::rpc {
namespace {

using test::v1::CountRequest;
using test::v1::CountResponse;
using test::v1::EchoRequest;
using test::v1::EchoResponse;
using test::v1::EchoServiceClient;

// One server for the whole suite: TCP and unix listeners.
class EchoServerEnv {
 public:
  static EchoServerEnv& Get() {
    static EchoServerEnv* env = new EchoServerEnv();
    return *env;
  }
  const std::string& tcp() const { return tcp_; }
  const std::string& unix_socket() const { return unix_; }

 private:
  EchoServerEnv() {
    char dir_template[] = "/tmp/metald-client-test-XXXXXX";
    const char* dir = mkdtemp(dir_template);
    EXPECT_NE(dir, nullptr);
    router_ = std::make_shared<Router>();
    EXPECT_TRUE(test::v1::RegisterEchoService(*router_, &echo_).ok());
    EXPECT_TRUE(RegisterHealthService(*router_, &health_).ok());
    ServerOptions options;
    options.listen = {"127.0.0.1:0", std::string("unix:") + dir + "/echo.sock"};
    options.handler_threads = 8;
    auto server = Server::Start(options, router_);
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    if (!server.ok()) return;
    server_ = std::move(*server);
    std::vector<std::string> addrs = server_->addresses();
    EXPECT_EQ(addrs.size(), 2u);
    if (addrs.size() == 2) {
      tcp_ = addrs[0];
      unix_ = addrs[1];
    }
  }

  testing::EchoService echo_;
  HealthService health_;
  std::shared_ptr<Router> router_;
  std::unique_ptr<Server> server_;
  std::string tcp_;
  std::string unix_;
};

enum class Addr { kTcp, kUnix };
using Param = std::tuple<ClientOptions::Transport, Addr, Codec>;

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  auto [transport, addr, codec] = info.param;
  return std::string(transport == ClientOptions::Transport::kHttp1 ? "Http1" : "H2c") +
         (addr == Addr::kTcp ? "Tcp" : "Unix") + (codec == Codec::kProto ? "Proto" : "Json");
}

class ClientTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    EchoServerEnv& env = EchoServerEnv::Get();
    ASSERT_FALSE(env.tcp().empty()) << "server did not start";
    client_ = MakeClient({});
    ASSERT_NE(client_, nullptr);
    echo_ = std::make_unique<EchoServiceClient>(client_.get());
  }

  std::unique_ptr<Client> MakeClient(std::function<void(ClientOptions&)> tweak) {
    auto [transport, addr, codec] = GetParam();
    ClientOptions options;
    options.target =
        addr == Addr::kTcp ? EchoServerEnv::Get().tcp() : EchoServerEnv::Get().unix_socket();
    options.transport = transport;
    options.codec = codec;
    if (tweak) tweak(options);
    auto client = Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status().ToString();
    return client.ok() ? std::move(*client) : nullptr;
  }

  std::string codec_name() const {
    return std::get<2>(GetParam()) == Codec::kProto ? "proto" : "json";
  }

  std::unique_ptr<Client> client_;
  std::unique_ptr<EchoServiceClient> echo_;
};

TEST_P(ClientTest, UnaryEchoesFieldsHeadersAndTrailers) {
  EchoRequest req;
  req.set_message("hello");
  req.set_number(42);
  req.set_payload(std::string("\0\1\2binary", 9));
  CallOptions options;
  options.headers.Add("X-Test-Color", "blue");
  options.headers.Add("x-other", "ignored");
  Metadata headers, trailers;
  options.response_headers = &headers;
  options.response_trailers = &trailers;

  auto resp = echo_->Echo(req, options);
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->message(), "hello");
  EXPECT_EQ(resp->number(), 42);
  EXPECT_EQ(resp->payload(), std::string("\0\1\2binary", 9));
  EXPECT_EQ(resp->protocol(), "connect");
  EXPECT_EQ(resp->codec(), codec_name());
  EXPECT_EQ(resp->timeout_ms(), 0);
  ASSERT_EQ(resp->headers().size(), 1u);
  EXPECT_EQ(resp->headers().at("x-test-color"), "blue");
  EXPECT_EQ(headers.Get("x-echo-header"), "hello");
  EXPECT_EQ(trailers.Get("x-echo-trailer"), "42");
  EXPECT_FALSE(headers.Has("trailer-x-echo-trailer"));
}

TEST_P(ClientTest, EmptyRequestAndResponse) {
  auto resp = echo_->Echo(EchoRequest());
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->message(), "");
  EXPECT_EQ(resp->number(), 0);
}

TEST_P(ClientTest, ErrorCarriesCodeMessageAndTrailers) {
  EchoRequest req;
  req.set_message("no such vm: ☺");
  req.set_number(7);
  req.set_fail_code("not_found");
  Metadata trailers;
  CallOptions options;
  options.response_trailers = &trailers;
  auto resp = echo_->Echo(req, options);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), base::StatusCode::kNotFound);
  EXPECT_EQ(resp.status().message(), "no such vm: ☺");
  EXPECT_EQ(trailers.Get("x-echo-trailer"), "7");

  req.set_fail_code("resource_exhausted");
  EXPECT_EQ(echo_->Echo(req).status().code(), base::StatusCode::kResourceExhausted);
  // The connection survives errors.
  req.clear_fail_code();
  EXPECT_TRUE(echo_->Echo(req).ok());
}

TEST_P(ClientTest, DeadlineIsSentAndEnforced) {
  EchoRequest req;
  CallOptions options;
  options.timeout = std::chrono::milliseconds(60'000);
  auto resp = echo_->Echo(req, options);
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_GT(resp->timeout_ms(), 0);
  EXPECT_LE(resp->timeout_ms(), 60'000);

  req.set_sleep_ms(30'000);
  options.timeout = std::chrono::milliseconds(200);
  resp = echo_->Echo(req, options);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), base::StatusCode::kDeadlineExceeded) << resp.status().ToString();

  // The client still works afterwards.
  EXPECT_TRUE(echo_->Echo(EchoRequest()).ok());
}

TEST_P(ClientTest, LargeResponsesWithAndWithoutGzip) {
  EchoRequest req;
  req.set_response_bytes(300'000);
  req.set_payload(std::string(100'000, 'p'));
  auto resp = echo_->Echo(req);
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->payload(), std::string(300'000, 'x'));

  auto gzip_client = MakeClient([](ClientOptions& o) { o.gzip = true; });
  ASSERT_NE(gzip_client, nullptr);
  EchoServiceClient gzip_echo(gzip_client.get());
  resp = gzip_echo.Echo(req);
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->payload(), std::string(300'000, 'x'));

  CountRequest count;
  count.set_count(3);
  std::vector<int> ns;
  base::Status st = gzip_echo.Count(count, [&](const CountResponse& r) {
    ns.push_back(r.n());
    return true;
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ns, (std::vector<int>{1, 2, 3}));
}

TEST_P(ClientTest, ServerStreamDeliversEveryMessageInOrder) {
  CountRequest req;
  req.set_count(20);
  std::vector<int> ns;
  Metadata headers;
  CallOptions options;
  options.response_headers = &headers;
  base::Status st = echo_->Count(
      req,
      [&](const CountResponse& r) {
        ns.push_back(r.n());
        return true;
      },
      options);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_EQ(ns.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(ns[i], i + 1);
  std::optional<std::string_view> type = headers.Get("content-type");
  ASSERT_TRUE(type.has_value());
  EXPECT_EQ(*type, "application/connect+" + codec_name());
}

TEST_P(ClientTest, ServerStreamEndsWithTheHandlersError) {
  CountRequest req;
  req.set_count(3);
  req.set_fail_code("aborted");
  std::vector<int> ns;
  base::Status st = echo_->Count(req, [&](const CountResponse& r) {
    ns.push_back(r.n());
    return true;
  });
  EXPECT_EQ(st.code(), base::StatusCode::kAborted) << st.ToString();
  EXPECT_EQ(st.message(), "count failed");
  EXPECT_EQ(ns, (std::vector<int>{1, 2, 3}));
}

TEST_P(ClientTest, ServerStreamCancelledByTheCaller) {
  CountRequest req;
  req.set_count(1000);
  req.set_interval_ms(10);
  int seen = 0;
  base::Status st = echo_->Count(req, [&](const CountResponse& r) {
    EXPECT_EQ(r.n(), seen + 1);
    return ++seen < 2;
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(seen, 2);
  // The client keeps working after abandoning a stream.
  EXPECT_TRUE(echo_->Echo(EchoRequest()).ok());
}

TEST_P(ClientTest, ServerStreamDeadline) {
  CountRequest req;
  req.set_count(1000);
  req.set_interval_ms(1000);
  CallOptions options;
  options.timeout = std::chrono::milliseconds(300);
  int seen = 0;
  base::Status st = echo_->Count(
      req,
      [&](const CountResponse&) {
        ++seen;
        return true;
      },
      options);
  EXPECT_EQ(st.code(), base::StatusCode::kDeadlineExceeded) << st.ToString();
  EXPECT_GE(seen, 1);
}

TEST_P(ClientTest, UnknownMethodIsUnimplemented) {
  EchoResponse resp;
  base::Status st = client_->Unary("/metald.test.v1.EchoService/Nope", EchoRequest(), &resp);
  EXPECT_EQ(st.code(), base::StatusCode::kUnimplemented) << st.ToString();
}

TEST_P(ClientTest, HealthCheckThroughGeneratedClient) {
  ::grpc::health::v1::HealthClient health(client_.get());
  auto resp = health.Check(::grpc::health::v1::HealthCheckRequest());
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status(), ::grpc::health::v1::HealthCheckResponse::SERVING);

  ::grpc::health::v1::HealthCheckRequest unknown;
  unknown.set_service("no.such.Service");
  EXPECT_EQ(health.Check(unknown).status().code(), base::StatusCode::kNotFound);
}

TEST_P(ClientTest, ConcurrentCallsShareOneClient) {
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        EchoRequest req;
        req.set_number(t * 1000 + i);
        auto resp = echo_->Echo(req);
        if (!resp.ok() || resp->number() != t * 1000 + i) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(AllTransports, ClientTest,
                         ::testing::Combine(::testing::Values(ClientOptions::Transport::kHttp1,
                                                              ClientOptions::Transport::kH2c),
                                            ::testing::Values(Addr::kTcp, Addr::kUnix),
                                            ::testing::Values(Codec::kProto, Codec::kJson)),
                         ParamName);

// The server closes idle connections; the client notices on its next call and retries once on a
// fresh connection instead of failing.
TEST(ClientPool, ReconnectsAfterTheServerClosedAnIdleConnection) {
  testing::EchoService echo;
  auto router = std::make_shared<Router>();
  ASSERT_TRUE(test::v1::RegisterEchoService(*router, &echo).ok());
  ServerOptions server_options;
  server_options.listen = {"127.0.0.1:0"};
  server_options.idle_timeout = std::chrono::milliseconds(50);
  auto server = Server::Start(server_options, router);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  for (auto transport : {ClientOptions::Transport::kHttp1, ClientOptions::Transport::kH2c}) {
    ClientOptions options;
    options.target = (*server)->addresses()[0];
    options.transport = transport;
    auto client = Client::Create(options);
    ASSERT_TRUE(client.ok());
    EchoServiceClient echo_client(client->get());
    for (int i = 0; i < 3; ++i) {
      EchoRequest req;
      req.set_number(i);
      auto resp = echo_client.Echo(req);
      ASSERT_TRUE(resp.ok()) << resp.status().ToString();
      EXPECT_EQ(resp->number(), i);
      // Long enough for the server to close the idle connection (not asserted either way).
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  }
}

// A port nobody listens on: bind port 0, read it back, close.
std::string ClosedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
}

TEST(ClientErrors, UnreachableServerIsUnavailableNamingTheTarget) {
  for (auto transport : {ClientOptions::Transport::kHttp1, ClientOptions::Transport::kH2c}) {
    for (const std::string& target :
         {ClosedPort(), std::string("unix:/tmp/metald-no-such-dir/none.sock")}) {
      ClientOptions options;
      options.target = target;
      options.transport = transport;
      auto client = Client::Create(options);
      ASSERT_TRUE(client.ok());
      EchoResponse resp;
      base::Status st = (*client)->Unary("/metald.test.v1.EchoService/Echo", EchoRequest(), &resp);
      EXPECT_EQ(st.code(), base::StatusCode::kUnavailable) << st.ToString();
      EXPECT_NE(st.message().find(target), std::string::npos) << st.ToString();
      st = (*client)->ServerStream("/metald.test.v1.EchoService/Count", CountRequest(),
                                   CountResponse::default_instance(),
                                   [](const google::protobuf::Message&) { return true; });
      EXPECT_EQ(st.code(), base::StatusCode::kUnavailable) << st.ToString();
    }
  }
}

TEST(ClientErrors, MalformedTargetsAreRejected) {
  for (const char* target :
       {"", "no-port", "host:", "host:99999", "[::1", "unix:", "https://example.com:443"}) {
    ClientOptions options;
    options.target = target;
    auto client = Client::Create(options);
    EXPECT_FALSE(client.ok()) << target;
    if (!client.ok()) {
      EXPECT_EQ(client.status().code(), base::StatusCode::kInvalidArgument);
    }
  }
  for (const char* target : {"127.0.0.1:80", "http://127.0.0.1:80/", "[::1]:8080", "localhost:1",
                             "unix:/run/metald.sock"}) {
    ClientOptions options;
    options.target = target;
    EXPECT_TRUE(Client::Create(options).ok()) << target;
  }
}

}  // namespace
}  // namespace metald::rpc

#include "metald/backend/qemu/qmp.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <thread>

namespace metald::backend::qemu {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using ::testing::HasSubstr;

constexpr char kGreeting[] =
    R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},)"
    R"( "capabilities": ["oob"]}})"
    "\r\n";

// The server end of a socketpair, driven by a script on its own thread.
class FakeQmpServer {
 public:
  explicit FakeQmpServer(int fd) : fd_(fd) {}
  ~FakeQmpServer() {
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }

  void Run(std::function<void(FakeQmpServer&)> script) {
    thread_ = std::thread([this, script] { script(*this); });
  }
  void Join() { thread_.join(); }

  // Blocks for one request line; returns it parsed (null on EOF).
  json ReadRequest() {
    for (;;) {
      size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return json::parse(line);
      }
      char buf[4096];
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) return nullptr;
      buffer_.append(buf, static_cast<size_t>(n));
    }
  }
  void Send(std::string_view bytes) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    (void)n;
  }
  void Reply(const json& request, const json& value) {
    Send(json{{"return", value}, {"id", request["id"]}}.dump() + "\r\n");
  }
  // Greeting, then the capabilities negotiation.
  void Negotiate() {
    Send(kGreeting);
    json req = ReadRequest();
    EXPECT_EQ(req["execute"], "qmp_capabilities");
    Reply(req, json::object());
  }
  void Close() {
    ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
  std::string buffer_;
  std::thread thread_;
};

class QmpClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    QmpClient::Options options;
    options.timeout = milliseconds(30'000);  // Guards against hangs only.
    client_ = std::make_unique<QmpClient>(fds[0], options);
    server_ = std::make_unique<FakeQmpServer>(fds[1]);
  }

  std::unique_ptr<QmpClient> client_;
  std::unique_ptr<FakeQmpServer> server_;
};

TEST_F(QmpClientTest, HandshakeReadsGreetingAndNegotiates) {
  server_->Run([](FakeQmpServer& s) { s.Negotiate(); });
  base::Result<json> version = client_->Handshake();
  ASSERT_TRUE(version.ok()) << version.status().ToString();
  EXPECT_EQ((*version)["qemu"]["major"], 7);
}

TEST_F(QmpClientTest, ExecuteSendsArgumentsAndMatchesReplyById) {
  server_->Run([](FakeQmpServer& s) {
    s.Negotiate();
    json req = s.ReadRequest();
    EXPECT_EQ(req["execute"], "human-monitor-command");
    EXPECT_EQ(req["arguments"]["command-line"], "info version");
    // An event and a stale reply (an abandoned command's id) come before the real reply.
    s.Send(R"({"event": "STOP", "timestamp": {"seconds": 12, "microseconds": 34}})"
           "\r\n");
    s.Send(R"({"return": "stale", "id": 999})"
           "\r\n");
    s.Reply(req, "7.2.0");
  });
  ASSERT_TRUE(client_->Handshake().ok());
  base::Result<json> r =
      client_->Execute("human-monitor-command", json{{"command-line", "info version"}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "7.2.0");
  std::vector<QmpEvent> events = client_->TakeEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].name, "STOP");
  EXPECT_EQ(events[0].seconds, 12);
  EXPECT_EQ(events[0].microseconds, 34);
  EXPECT_TRUE(client_->TakeEvents().empty());
}

TEST_F(QmpClientTest, ReplyArrivingInPiecesIsReassembled) {
  server_->Run([](FakeQmpServer& s) {
    s.Negotiate();
    json req = s.ReadRequest();
    std::string reply =
        json{{"return", {{"status", "running"}}}, {"id", req["id"]}}.dump() + "\r\n";
    for (char c : reply) {
      s.Send(std::string_view(&c, 1));
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  ASSERT_TRUE(client_->Handshake().ok());
  base::Result<json> r = client_->Execute("query-status");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["status"], "running");
}

TEST_F(QmpClientTest, ErrorReplyNamesCommandClassAndDescription) {
  server_->Run([](FakeQmpServer& s) {
    s.Negotiate();
    json req = s.ReadRequest();
    s.Send(json{{"error", {{"class", "GenericError"}, {"desc", "VM is not running"}}},
                {"id", req["id"]}}
               .dump() +
           "\r\n");
    req = s.ReadRequest();
    s.Send(json{{"error", {{"class", "CommandNotFound"}, {"desc", "nope"}}}, {"id", req["id"]}}
               .dump() +
           "\r\n");
  });
  ASSERT_TRUE(client_->Handshake().ok());
  base::Result<json> r = client_->Execute("stop");
  EXPECT_EQ(r.status().code(), base::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(), "QMP stop: GenericError: VM is not running");
  r = client_->Execute("frobnicate");
  EXPECT_EQ(r.status().code(), base::StatusCode::kUnimplemented);
  EXPECT_FALSE(client_->broken());
}

TEST_F(QmpClientTest, SilentServerTimesOut) {
  server_->Run([](FakeQmpServer& s) {
    s.Negotiate();
    s.ReadRequest();  // Never answers; returns when the client closes.
  });
  ASSERT_TRUE(client_->Handshake().ok());
  base::Result<json> r = client_->Execute("query-status", nullptr, milliseconds(200));
  EXPECT_EQ(r.status().code(), base::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(r.status().message(), HasSubstr("query-status"));
  client_.reset();  // Closes the socket: the server thread ends.
}

TEST_F(QmpClientTest, GarbageIsAnError) {
  server_->Run([](FakeQmpServer& s) {
    s.Negotiate();
    s.ReadRequest();
    s.Send("this is not json\r\n");
  });
  ASSERT_TRUE(client_->Handshake().ok());
  base::Result<json> r = client_->Execute("query-status");
  EXPECT_EQ(r.status().code(), base::StatusCode::kInternal);
  EXPECT_THAT(r.status().message(), HasSubstr("QMP query-status: malformed message"));
}

TEST_F(QmpClientTest, GreetingMustComeFirst) {
  server_->Run([](FakeQmpServer& s) {
    s.Send(R"({"return": {}})"
           "\n");
  });
  EXPECT_EQ(client_->Handshake().status().code(), base::StatusCode::kInternal);
  EXPECT_TRUE(client_->broken());
}

TEST_F(QmpClientTest, ClosedConnectionIsUnavailable) {
  server_->Run([](FakeQmpServer& s) {
    s.Negotiate();
    s.ReadRequest();
    s.Send(R"({"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}})"
           "\r\n");
    s.Close();
  });
  ASSERT_TRUE(client_->Handshake().ok());
  base::Result<json> r = client_->Execute("quit");
  EXPECT_EQ(r.status().code(), base::StatusCode::kUnavailable);
  EXPECT_TRUE(client_->broken());
  // The event that came before the close is kept.
  std::vector<QmpEvent> events = client_->TakeEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data["reason"], "host-qmp-quit");
  EXPECT_EQ(client_->Execute("query-status").status().code(), base::StatusCode::kUnavailable);
}

TEST_F(QmpClientTest, PollEventsQueuesEventsAndDropsStaleReplies) {
  server_->Run([](FakeQmpServer& s) {
    s.Negotiate();
    s.Send(R"({"event": "POWERDOWN"})"
           "\r\n"
           R"({"return": {}, "id": 77})"
           "\r\n"
           R"({"event": "RESET", "data": {"guest": true}})"
           "\r\n");
  });
  ASSERT_TRUE(client_->Handshake().ok());
  server_->Join();
  ASSERT_TRUE(client_->PollEvents(milliseconds(0)).ok());
  std::vector<QmpEvent> events = client_->TakeEvents();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].name, "POWERDOWN");
  EXPECT_EQ(events[1].name, "RESET");
}

TEST(QmpParseTest, RecognisesTheFourShapes) {
  base::Result<QmpMessage> m = ParseQmpMessage(R"({"QMP": {"version": {}}})");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->kind, QmpMessage::Kind::kGreeting);
  m = ParseQmpMessage(R"({"return": [1, 2], "id": 3})");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->kind, QmpMessage::Kind::kReturn);
  EXPECT_EQ(m->id, 3);
  EXPECT_EQ(m->value.size(), 2u);
  m = ParseQmpMessage(R"({"error": {"class": "GenericError", "desc": "d"}})");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->kind, QmpMessage::Kind::kError);
  EXPECT_TRUE(m->id.is_null());
  m = ParseQmpMessage(R"({"event": "RESUME", "timestamp": {"seconds": "x"}})");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->event.name, "RESUME");
  EXPECT_EQ(m->event.seconds, 0);
}

TEST(QmpParseTest, RejectsMalformedMessages) {
  for (const char* bad :
       {"", "{", "[]", "42", R"({"foo": 1})", R"({"QMP": 1})", R"({"error": "x"})",
        R"({"error": {"class": 1, "desc": "d"}})", R"({"event": 5})"}) {
    EXPECT_EQ(ParseQmpMessage(bad).status().code(), base::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(QmpFramerTest, SplitsLinesAndBoundsLength) {
  QmpFramer framer(16);
  framer.Feed("{\"a\":1}\r\n\r\n{\"b\"");
  base::Result<std::optional<std::string>> line = framer.Next();
  ASSERT_TRUE(line.ok() && line->has_value());
  EXPECT_EQ(**line, "{\"a\":1}");
  line = framer.Next();
  ASSERT_TRUE(line.ok());
  EXPECT_FALSE(line->has_value());
  framer.Feed(":2}\n");
  line = framer.Next();
  ASSERT_TRUE(line.ok() && line->has_value());
  EXPECT_EQ(**line, "{\"b\":2}");
  framer.Feed(std::string(17, 'x'));
  EXPECT_EQ(framer.Next().status().code(), base::StatusCode::kResourceExhausted);
}

TEST(QmpConnectTest, ConnectsToAUnixSocketAndRefusesLongPaths) {
  char tmpl[] = "/tmp/metald-qmp-test.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string path = std::string(tmpl) + "/qmp.sock";
  EXPECT_EQ(QmpClient::Connect(path, {}).status().code(), base::StatusCode::kUnavailable);

  int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  std::thread server([listener] {
    int fd = ::accept(listener, nullptr, nullptr);
    FakeQmpServer s(fd);
    s.Negotiate();
  });
  base::Result<std::unique_ptr<QmpClient>> client = QmpClient::Connect(path, {});
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_TRUE((*client)->Handshake().ok());
  server.join();
  ::close(listener);

  EXPECT_EQ(QmpClient::Connect("/tmp/" + std::string(200, 'x'), {}).status().code(),
            base::StatusCode::kInvalidArgument);
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace metald::backend::qemu

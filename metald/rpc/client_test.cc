// Client behaviour against canned HTTP/1.1 responses (no rpc::Server involved): error mapping,
// trailers, broken streams. The end-to-end tests are tests/rpc/client_test.cc.

#include "metald/rpc/client.h"

#include <google/protobuf/wrappers.pb.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "metald/rpc/wire.h"

namespace metald::rpc {
namespace {

using google::protobuf::StringValue;

// Accepts one connection on 127.0.0.1, reads the request head and body, writes `response`
// and closes. The request it saw is kept in request().
class CannedServer {
 public:
  explicit CannedServer(std::string response) : response_(std::move(response)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_fd_, 4), 0);
    socklen_t len = sizeof(addr);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    target_ = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
    thread_ = std::thread([this] { Serve(); });
  }
  ~CannedServer() {
    thread_.join();
    ::close(listen_fd_);
  }
  const std::string& target() const { return target_; }
  // REQUIRES: the call finished (the server thread wrote its response).
  const std::string& request() const { return request_; }

 private:
  void Serve() {
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) return;
    char buf[4096];
    size_t body_len = 0;
    while (true) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      request_.append(buf, static_cast<size_t>(n));
      size_t end = request_.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      size_t cl = request_.find("Content-Length: ");
      if (cl != std::string::npos) body_len = std::stoul(request_.substr(cl + 16));
      if (request_.size() >= end + 4 + body_len) break;
    }
    ::send(fd, response_.data(), response_.size(), MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    // Drain until the client closes, so the response is not reset.
    while (::recv(fd, buf, sizeof(buf), 0) > 0) {
    }
    ::close(fd);
  }

  std::string response_;
  int listen_fd_ = -1;
  std::string target_;
  std::string request_;
  std::thread thread_;
};

std::string HttpResponse(std::string status_line, std::string headers, std::string body) {
  return "HTTP/1.1 " + status_line + "\r\n" + headers +
         "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

base::Status CallUnary(const std::string& target, StringValue* response,
                       const CallOptions& options = {}, Codec codec = Codec::kProto) {
  ClientOptions client_options;
  client_options.target = target;
  client_options.codec = codec;
  auto client = Client::Create(client_options);
  EXPECT_TRUE(client.ok());
  StringValue request;
  request.set_value("ping");
  return (*client)->Unary("/test.Svc/Method", request, response, options);
}

TEST(ClientCanned, SendsConnectHeadersAndSplitsTrailers) {
  StringValue reply;
  reply.set_value("pong");
  CannedServer server(HttpResponse("200 OK",
                                   "Content-Type: application/proto\r\nX-Head: h\r\n"
                                   "Trailer-X-Tail: t1\r\nTrailer-X-Tail: t2\r\n",
                                   reply.SerializeAsString()));
  StringValue response;
  Metadata headers, trailers;
  CallOptions options;
  options.timeout = std::chrono::milliseconds(12'345);
  options.headers.Add("x-call", "c");
  options.response_headers = &headers;
  options.response_trailers = &trailers;
  base::Status st = CallUnary(server.target(), &response, options);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(response.value(), "pong");
  EXPECT_EQ(headers.Get("x-head"), "h");
  EXPECT_FALSE(headers.Has("trailer-x-tail"));
  EXPECT_EQ(trailers.GetAll("x-tail"), (std::vector<std::string_view>{"t1", "t2"}));

  const std::string& req = server.request();
  EXPECT_NE(req.find("POST /test.Svc/Method HTTP/1.1\r\n"), std::string::npos) << req;
  EXPECT_NE(req.find("connect-protocol-version: 1\r\n"), std::string::npos) << req;
  EXPECT_NE(req.find("connect-timeout-ms: 12345\r\n"), std::string::npos) << req;
  EXPECT_NE(req.find("content-type: application/proto\r\n"), std::string::npos) << req;
  EXPECT_NE(req.find("x-call: c\r\n"), std::string::npos) << req;
}

TEST(ClientCanned, ConnectErrorJsonGivesCodeAndMessage) {
  CannedServer server(HttpResponse("409 Conflict", "Content-Type: application/json\r\n",
                                   R"({"code":"aborted","message":"try again"})"));
  StringValue response;
  base::Status st = CallUnary(server.target(), &response);
  EXPECT_EQ(st.code(), base::StatusCode::kAborted);
  EXPECT_EQ(st.message(), "try again");
}

TEST(ClientCanned, NonJsonErrorMapsTheHttpStatus) {
  struct Case {
    const char* status_line;
    base::StatusCode code;
  } cases[] = {{"503 Service Unavailable", base::StatusCode::kUnavailable},
               {"400 Bad Request", base::StatusCode::kInternal},
               {"401 Unauthorized", base::StatusCode::kUnauthenticated},
               {"404 Not Found", base::StatusCode::kUnimplemented},
               {"415 Unsupported Media Type", base::StatusCode::kUnknown}};
  for (const Case& c : cases) {
    CannedServer server(HttpResponse(c.status_line, "Content-Type: text/plain\r\n", "nope"));
    StringValue response;
    EXPECT_EQ(CallUnary(server.target(), &response).code(), c.code) << c.status_line;
  }
}

TEST(ClientCanned, GzipResponseIsDecompressed) {
  StringValue reply;
  reply.set_value(std::string(1000, 'z'));
  auto gz = wire::GzipCompress(reply.SerializeAsString());
  ASSERT_TRUE(gz.ok());
  CannedServer server(
      HttpResponse("200 OK", "Content-Type: application/proto\r\nContent-Encoding: gzip\r\n", *gz));
  StringValue response;
  base::Status st = CallUnary(server.target(), &response);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(response.value(), std::string(1000, 'z'));
}

TEST(ClientCanned, WrongContentTypeIsInternal) {
  CannedServer server(HttpResponse("200 OK", "Content-Type: text/html\r\n", "<html>"));
  StringValue response;
  EXPECT_EQ(CallUnary(server.target(), &response).code(), base::StatusCode::kInternal);
}

base::Status CallStream(const std::string& target, std::vector<std::string>* values,
                        Metadata* trailers = nullptr) {
  ClientOptions client_options;
  client_options.target = target;
  auto client = Client::Create(client_options);
  EXPECT_TRUE(client.ok());
  CallOptions options;
  options.response_trailers = trailers;
  return (*client)->ServerStream(
      "/test.Svc/Stream", StringValue(), StringValue::default_instance(),
      [&](const google::protobuf::Message& m) {
        values->push_back(static_cast<const StringValue&>(m).value());
        return true;
      },
      options);
}

std::string Message(const std::string& value) {
  StringValue v;
  v.set_value(value);
  return wire::EncodeEnvelope(0, v.SerializeAsString());
}

TEST(ClientCanned, StreamEndStreamCarriesErrorAndTrailers) {
  std::string body =
      Message("a") + Message("b") +
      wire::EncodeEnvelope(
          wire::kFlagEndStream,
          R"({"error":{"code":"unavailable","message":"bye"},"metadata":{"x-t":["1"]}})");
  CannedServer server(HttpResponse("200 OK", "Content-Type: application/connect+proto\r\n", body));
  std::vector<std::string> values;
  Metadata trailers;
  base::Status st = CallStream(server.target(), &values, &trailers);
  EXPECT_EQ(st.code(), base::StatusCode::kUnavailable);
  EXPECT_EQ(st.message(), "bye");
  EXPECT_EQ(values, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(trailers.Get("x-t"), "1");
  EXPECT_NE(server.request().find("content-type: application/connect+proto\r\n"),
            std::string::npos);
}

TEST(ClientCanned, StreamWithoutEndStreamIsAnError) {
  CannedServer server(
      HttpResponse("200 OK", "Content-Type: application/connect+proto\r\n", Message("a")));
  std::vector<std::string> values;
  base::Status st = CallStream(server.target(), &values);
  EXPECT_EQ(st.code(), base::StatusCode::kInternal) << st.ToString();
  EXPECT_EQ(values, std::vector<std::string>{"a"});
}

TEST(ClientCanned, StreamCutInsideAMessageIsAnError) {
  std::string body = Message("a") + Message("bcdef").substr(0, 7);
  CannedServer server(HttpResponse("200 OK", "Content-Type: application/connect+proto\r\n", body));
  std::vector<std::string> values;
  base::Status st = CallStream(server.target(), &values);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(values, std::vector<std::string>{"a"});
}

TEST(ClientCanned, ConnectionClosedBeforeAResponseIsUnavailable) {
  CannedServer server("");
  StringValue response;
  base::Status st = CallUnary(server.target(), &response);
  EXPECT_EQ(st.code(), base::StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find(server.target()), std::string::npos) << st.ToString();
}

}  // namespace
}  // namespace metald::rpc

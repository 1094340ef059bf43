// The code protoc-gen-metald generates for tests/proto/metald/test/v1/echo.proto, compiled and
// exercised: registration (paths, kinds, no_side_effects, prototypes) and the handler lambdas.
// Lives in tests/ because metald/ code may not include the test protos (tools/check_includes.py).

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "metald/rpc/router.h"
#include "metald/test/v1/echo.metald.h"

namespace metald::rpc {
namespace {

namespace pb = google::protobuf;
using metald::test::v1::CountRequest;
using metald::test::v1::CountResponse;
using metald::test::v1::EchoRequest;
using metald::test::v1::EchoResponse;

class RecordingHandler : public test::v1::EchoServiceHandler {
 public:
  base::Status Echo(CallContext&, const EchoRequest& request, EchoResponse& response) override {
    response.set_message("echo:" + request.message());
    return base::OkStatus();
  }
  base::Status EchoGet(CallContext&, const EchoRequest& request, EchoResponse& response) override {
    response.set_message("get:" + request.message());
    return base::NotFoundError("get called");
  }
  base::Status Count(CallContext&, const CountRequest& request,
                     TypedStreamWriter<CountResponse>& writer) override {
    for (int i = 1; i <= request.count(); ++i) {
      CountResponse r;
      r.set_n(i);
      RETURN_IF_ERROR(writer.Write(r));
    }
    return base::OkStatus();
  }
};

class CollectingWriter : public StreamWriter {
 public:
  base::Status Write(const pb::Message& message) override {
    ns.push_back(dynamic_cast<const CountResponse&>(message).n());
    return base::OkStatus();
  }
  std::vector<int> ns;
};

CallContext MakeContext(const MethodHandler& m) {
  return CallContext(m.desc, Protocol::kConnect, Codec::kProto, {}, "unix", std::nullopt, nullptr);
}

TEST(GeneratedEchoService, RegistersEveryMethodWithItsKind) {
  RecordingHandler handler;
  Router router;
  ASSERT_TRUE(test::v1::RegisterEchoService(router, &handler).ok());
  EXPECT_EQ(test::v1::kEchoServiceName, "metald.test.v1.EchoService");
  EXPECT_EQ(router.ServiceNames(), std::vector<std::string>{"metald.test.v1.EchoService"});

  const MethodHandler* echo = router.FindMethod("/metald.test.v1.EchoService/Echo");
  const MethodHandler* get = router.FindMethod("/metald.test.v1.EchoService/EchoGet");
  const MethodHandler* count = router.FindMethod("/metald.test.v1.EchoService/Count");
  ASSERT_NE(echo, nullptr);
  ASSERT_NE(get, nullptr);
  ASSERT_NE(count, nullptr);

  EXPECT_EQ(echo->desc.service, "metald.test.v1.EchoService");
  EXPECT_EQ(echo->desc.method, "Echo");
  EXPECT_EQ(echo->desc.kind, MethodKind::kUnary);
  EXPECT_FALSE(echo->desc.no_side_effects);
  EXPECT_EQ(get->desc.kind, MethodKind::kUnary);
  EXPECT_TRUE(get->desc.no_side_effects);
  EXPECT_EQ(count->desc.kind, MethodKind::kServerStreaming);
  EXPECT_FALSE(count->desc.no_side_effects);
  EXPECT_TRUE(echo->unary && !echo->stream);
  EXPECT_TRUE(count->stream && !count->unary);
  EXPECT_EQ(echo->request_prototype, &EchoRequest::default_instance());
  EXPECT_EQ(echo->response_prototype, &EchoResponse::default_instance());
  EXPECT_EQ(count->request_prototype, &CountRequest::default_instance());
  EXPECT_EQ(count->response_prototype, &CountResponse::default_instance());

  // A second registration collides on the paths.
  EXPECT_EQ(test::v1::RegisterEchoService(router, &handler).code(),
            base::StatusCode::kAlreadyExists);
}

TEST(GeneratedEchoService, LambdasCallTheHandler) {
  RecordingHandler handler;
  Router router;
  ASSERT_TRUE(test::v1::RegisterEchoService(router, &handler).ok());

  const MethodHandler* echo = router.FindMethod("/metald.test.v1.EchoService/Echo");
  CallContext ctx = MakeContext(*echo);
  EchoRequest req;
  req.set_message("hi");
  EchoResponse resp;
  ASSERT_TRUE(echo->unary(ctx, req, resp).ok());
  EXPECT_EQ(resp.message(), "echo:hi");

  const MethodHandler* get = router.FindMethod("/metald.test.v1.EchoService/EchoGet");
  EXPECT_EQ(get->unary(ctx, req, resp).code(), base::StatusCode::kNotFound);
  EXPECT_EQ(resp.message(), "get:hi");

  const MethodHandler* count = router.FindMethod("/metald.test.v1.EchoService/Count");
  CountRequest creq;
  creq.set_count(3);
  CollectingWriter writer;
  ASSERT_TRUE(count->stream(ctx, creq, writer).ok());
  EXPECT_EQ(writer.ns, (std::vector<int>{1, 2, 3}));
}

}  // namespace
}  // namespace metald::rpc

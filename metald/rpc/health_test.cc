#include "metald/rpc/health.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace metald::rpc {
namespace {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

// Records written statuses; fails writes after `fail_after` messages.
class RecordingWriter : public StreamWriter {
 public:
  base::Status Write(const google::protobuf::Message& message) override {
    std::lock_guard lock(mu);
    if (statuses.size() >= fail_after) return base::CancelledError("Peer gone");
    statuses.push_back(dynamic_cast<const HealthCheckResponse&>(message).status());
    cv.notify_all();
    return base::OkStatus();
  }
  // Waits (bounded, only to avoid hanging) until `n` messages were written.
  bool WaitForCount(size_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(30), [&] { return statuses.size() >= n; });
  }
  std::vector<int> Snapshot() {
    std::lock_guard lock(mu);
    return statuses;
  }

  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> statuses;
  size_t fail_after = SIZE_MAX;
};

class HealthTest : public ::testing::Test {
 protected:
  HealthTest() {
    EXPECT_TRUE(RegisterHealthService(router_, &health_).ok());
    check_ = router_.FindMethod("/grpc.health.v1.Health/Check");
    watch_ = router_.FindMethod("/grpc.health.v1.Health/Watch");
  }
  CallContext Context(const MethodHandler* m, std::shared_ptr<CancelToken> cancel = nullptr) {
    return CallContext(m->desc, Protocol::kGrpc, Codec::kProto, {}, "unix", std::nullopt,
                       std::move(cancel));
  }
  base::Status Check(const std::string& service, HealthCheckResponse* response) {
    HealthCheckRequest request;
    request.set_service(service);
    CallContext ctx = Context(check_);
    return check_->unary(ctx, request, *response);
  }

  HealthService health_;
  Router router_;
  const MethodHandler* check_ = nullptr;
  const MethodHandler* watch_ = nullptr;
};

TEST_F(HealthTest, RegistersStandardPaths) {
  ASSERT_NE(check_, nullptr);
  ASSERT_NE(watch_, nullptr);
  EXPECT_EQ(check_->desc.kind, MethodKind::kUnary);
  EXPECT_EQ(watch_->desc.kind, MethodKind::kServerStreaming);
}

TEST_F(HealthTest, CheckReportsKnownServicesAndNotFoundOtherwise) {
  HealthCheckResponse response;
  ASSERT_TRUE(Check("", &response).ok());
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);

  EXPECT_EQ(Check("metald.v1.VmService", &response).code(), base::StatusCode::kNotFound);

  health_.SetStatus("metald.v1.VmService", HealthCheckResponse::NOT_SERVING);
  ASSERT_TRUE(Check("metald.v1.VmService", &response).ok());
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);

  health_.SetStatus("metald.v1.VmService", HealthCheckResponse::SERVING);
  ASSERT_TRUE(Check("metald.v1.VmService", &response).ok());
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);

  health_.Shutdown();
  ASSERT_TRUE(Check("", &response).ok());
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  ASSERT_TRUE(Check("metald.v1.VmService", &response).ok());
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
}

TEST_F(HealthTest, WatchStreamsCurrentStatusThenChangesUntilCancelled) {
  auto cancel = std::make_shared<CancelToken>();
  RecordingWriter writer;
  base::Status result;
  std::thread watcher([&] {
    HealthCheckRequest request;
    request.set_service("svc");
    CallContext ctx = Context(watch_, cancel);
    result = watch_->stream(ctx, request, writer);
  });

  ASSERT_TRUE(writer.WaitForCount(1));
  health_.SetStatus("svc", HealthCheckResponse::SERVING);
  ASSERT_TRUE(writer.WaitForCount(2));
  // Setting the same status again is not a change.
  health_.SetStatus("svc", HealthCheckResponse::SERVING);
  health_.SetStatus("svc", HealthCheckResponse::NOT_SERVING);
  ASSERT_TRUE(writer.WaitForCount(3));
  cancel->Cancel(base::DeadlineExceededError("Deadline passed"));
  watcher.join();

  EXPECT_EQ(writer.Snapshot(),
            (std::vector<int>{HealthCheckResponse::SERVICE_UNKNOWN, HealthCheckResponse::SERVING,
                              HealthCheckResponse::NOT_SERVING}));
  EXPECT_EQ(result.code(), base::StatusCode::kDeadlineExceeded);
}

TEST_F(HealthTest, WatchEndsWhenThePeerIsGone) {
  RecordingWriter writer;
  writer.fail_after = 1;
  auto cancel = std::make_shared<CancelToken>();
  std::thread watcher([&] {
    HealthCheckRequest request;
    CallContext ctx = Context(watch_, cancel);
    EXPECT_EQ(watch_->stream(ctx, request, writer).code(), base::StatusCode::kCancelled);
  });
  ASSERT_TRUE(writer.WaitForCount(1));
  health_.SetStatus("", HealthCheckResponse::NOT_SERVING);
  watcher.join();
  EXPECT_EQ(writer.Snapshot(), std::vector<int>{HealthCheckResponse::SERVING});
}

TEST_F(HealthTest, WatchOnAnAlreadyCancelledCallReturnsAtOnce) {
  auto cancel = std::make_shared<CancelToken>();
  cancel->Cancel(base::CancelledError("Client went away"));
  RecordingWriter writer;
  HealthCheckRequest request;
  CallContext ctx = Context(watch_, cancel);
  EXPECT_EQ(watch_->stream(ctx, request, writer).code(), base::StatusCode::kCancelled);
  EXPECT_TRUE(writer.Snapshot().empty());
}

}  // namespace
}  // namespace metald::rpc

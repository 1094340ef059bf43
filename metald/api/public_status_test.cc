// ToPublicStatus: internal details never reach a client; the log keeps them with the same ref.

#include <gtest/gtest.h>

#include <memory>
#include <regex>
#include <string>

#include "metald/api/vm_api.h"
#include "metald/observe/testing/log_capture.h"

namespace metald::api {
namespace {

class PublicStatusTest : public ::testing::Test {
 protected:
  PublicStatusTest()
      : log_(observe::LoggerOptions{.level = observe::Level::kDebug, .sink = sink_}) {}

  std::shared_ptr<observe::testing::CapturingLogSink> sink_ =
      std::make_shared<observe::testing::CapturingLogSink>();
  observe::Logger log_;
};

TEST_F(PublicStatusTest, HidesInternalUnknownAndDataLossBehindARef) {
  const std::regex kPublic(R"(Internal error \(ref ([0-9a-f]{8})\))");
  for (base::Status secret : {base::InternalError("sqlite: disk I/O error at /var/lib/metald/db"),
                              base::UnknownError("qmp said: /run/metald/vm-1/qmp.sock gone"),
                              base::DataLossError("spool file /var/spool/x truncated")}) {
    sink_->Clear();
    base::Status shown = ToPublicStatus(secret, log_);
    EXPECT_EQ(shown.code(), base::StatusCode::kInternal);
    std::smatch m;
    ASSERT_TRUE(std::regex_match(shown.message(), m, kPublic)) << shown.message();
    EXPECT_EQ(shown.message().find('/'), std::string::npos);

    auto records = sink_->records();
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].level, observe::Level::kError);
    EXPECT_EQ(records[0].Get("ref"), m[1].str());
    auto error = records[0].Get("error");
    ASSERT_TRUE(error.has_value());
    EXPECT_NE(error->find(secret.message()), std::string::npos) << *error;
  }
}

TEST_F(PublicStatusTest, RefsDiffer) {
  base::Status a = ToPublicStatus(base::InternalError("x"), log_);
  base::Status b = ToPublicStatus(base::InternalError("x"), log_);
  EXPECT_NE(a.message(), b.message());
}

TEST_F(PublicStatusTest, OtherCodesPassUnchangedAndAreNotLogged) {
  for (base::Status s :
       {base::OkStatus(), base::NotFoundError("VM vm-x not found"),
        base::InvalidArgumentError("cpu.vcpu_count must be between 1 and 32"),
        base::FailedPreconditionError("Cannot pause VM in state STOPPED"),
        base::UnavailableError("Backend unavailable"), base::DeadlineExceededError("Timed out"),
        base::CancelledError("Cancelled"), base::ResourceExhaustedError("Quota"),
        base::UnauthenticatedError("Token expired"), base::AlreadyExistsError("Key reused")}) {
    EXPECT_EQ(ToPublicStatus(s, log_), s);
  }
  EXPECT_EQ(sink_->size(), 0u);
}

}  // namespace
}  // namespace metald::api

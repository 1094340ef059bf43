#include "metald/base/status.h"

#include <gtest/gtest.h>

namespace metald::base {
namespace {

TEST(StatusTest, CodeNamesRoundTripForEveryCode) {
  for (int i = 0; i <= 16; ++i) {
    auto code = static_cast<StatusCode>(i);
    auto back = StatusCodeFromName(StatusCodeName(code));
    ASSERT_TRUE(back.has_value()) << i;
    EXPECT_EQ(*back, code);
  }
  EXPECT_EQ(StatusCodeName(StatusCode::kCancelled), "canceled");
  EXPECT_EQ(StatusCodeName(static_cast<StatusCode>(99)), "unknown");
  EXPECT_FALSE(StatusCodeFromName("CANCELLED").has_value());
}

TEST(StatusTest, ContextPrefixesMessageAndKeepsCode) {
  Status s = NotFoundError("no such VM").WithContext("BootVm vm-1");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "BootVm vm-1: no such VM");
  EXPECT_EQ(s.ToString(), "not_found: BootVm vm-1: no such VM");
  EXPECT_TRUE(OkStatus().WithContext("x").ok());
}

Result<int> Half(int x) {
  if (x % 2) return InvalidArgumentError("odd");
  return x / 2;
}

Status UseHalf(int x, int* out) {
  ASSIGN_OR_RETURN(int h, Half(x));
  *out = h;
  return OkStatus();
}

TEST(ResultTest, ValueOrStatusAndMacros) {
  EXPECT_EQ(*Half(4), 2);
  EXPECT_EQ(Half(3).status().code(), StatusCode::kInvalidArgument);
  int out = 0;
  EXPECT_TRUE(UseHalf(8, &out).ok());
  EXPECT_EQ(out, 4);
  EXPECT_EQ(UseHalf(7, &out).message(), "odd");
  Result<int> bad{OkStatus()};
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace metald::base

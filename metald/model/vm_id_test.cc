#include "metald/model/vm_id.h"

#include <gtest/gtest.h>

#include <set>

namespace metald::model {
namespace {

TEST(VmIdTest, DeterministicWithInjectedSources) {
  VmIdGenerator::Options opts;
  opts.now_unix_ms = [] { return int64_t{0}; };
  opts.random64 = [] { return uint64_t{0}; };
  VmIdGenerator gen(opts);
  EXPECT_EQ(gen.Next(), "vm-" + std::string(26, '0'));

  opts.now_unix_ms = [] { return int64_t{(int64_t{1} << 48) - 1}; };
  opts.random64 = [] { return ~uint64_t{0}; };
  VmIdGenerator max_gen(opts);
  EXPECT_EQ(max_gen.Next(), "vm-7" + std::string(25, 'z'));
}

TEST(VmIdTest, TimePrefixSortsAndRandomPartDiffers) {
  int64_t now = 1700000000000;
  uint64_t r = 0;
  VmIdGenerator::Options opts;
  opts.now_unix_ms = [&] { return now; };
  opts.random64 = [&] { return r++; };
  VmIdGenerator gen(opts);
  std::string a = gen.Next();
  now += 1;
  std::string b = gen.Next();
  EXPECT_LT(a, b);
  EXPECT_EQ(a.substr(0, 12), b.substr(0, 12));  // same ms prefix except the last time digit(s)
  EXPECT_NE(a.substr(3, 10), b.substr(3, 10));
  EXPECT_NE(a.substr(13), b.substr(13));
  EXPECT_TRUE(IsValidVmId(a));
  EXPECT_TRUE(IsValidVmId(b));
}

TEST(VmIdTest, DefaultGeneratorGivesValidDistinctIds) {
  VmIdGenerator gen;
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) {
    std::string id = gen.Next();
    EXPECT_TRUE(IsValidVmId(id)) << id;
    EXPECT_TRUE(ids.insert(id).second) << id;
  }
}

TEST(VmIdTest, Validation) {
  EXPECT_TRUE(IsValidVmId("vm-01h000000000000000000000zz"));
  EXPECT_FALSE(IsValidVmId("vm-01h000000000000000000000z"));    // 25 chars
  EXPECT_FALSE(IsValidVmId("vm-01h000000000000000000000zzz"));  // 27 chars
  EXPECT_FALSE(IsValidVmId("vm-01H000000000000000000000zz"));   // upper case
  EXPECT_FALSE(IsValidVmId("vm-01i000000000000000000000zz"));   // 'i' not in Crockford
  EXPECT_FALSE(IsValidVmId("vx-01h000000000000000000000zz"));
  EXPECT_FALSE(IsValidVmId("vm-81h000000000000000000000zz"));  // time overflows 48 bits
  EXPECT_FALSE(IsValidVmId(""));
}

}  // namespace
}  // namespace metald::model

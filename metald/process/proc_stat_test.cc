#include "metald/process/proc_stat.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace metald::process {
namespace {

// A real line from a kernel, with a command name holding spaces and ')'.
constexpr char kStat[] =
    "4242 (qemu) sys (x)) S 1 4242 4242 0 -1 4194560 2000 0 0 0 1234 567 0 0 20 0 3 0 "
    "98765 1000000 5000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";

TEST(ProcStatTest, ParsesFieldsAfterTheLastParenthesis) {
  base::Result<ProcStat> stat = ParseProcStat(kStat);
  ASSERT_TRUE(stat.ok()) << stat.status().ToString();
  EXPECT_EQ(stat->state, 'S');
  EXPECT_EQ(stat->utime, 1234u);
  EXPECT_EQ(stat->stime, 567u);
  EXPECT_EQ(stat->start_time, 98765u);
}

TEST(ProcStatTest, RejectsMalformedText) {
  EXPECT_FALSE(ParseProcStat("").ok());
  EXPECT_FALSE(ParseProcStat("12 (x) S 1 2 3").ok());
  EXPECT_FALSE(ParseProcStat("no parentheses at all 1 2 3 4 5 6 7 8 9 10 11 12 13").ok());
  EXPECT_FALSE(ParseProcStat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 5 0 0 20 0 1 0 9 0 0").ok());
}

TEST(ProcStatTest, ReadsOwnProcess) {
  base::Result<ProcStat> stat = ReadProcStat(::getpid());
  ASSERT_TRUE(stat.ok()) << stat.status().ToString();
  EXPECT_EQ(stat->state, 'R');
  EXPECT_GT(stat->start_time, 0u);
  base::Result<uint64_t> rss = ReadVmRssBytes(::getpid());
  ASSERT_TRUE(rss.ok());
  EXPECT_GT(*rss, 0u);
}

TEST(ProcStatTest, MissingProcessIsNotFound) {
  // pid_max is at most 2^22, so this pid never exists.
  EXPECT_EQ(ReadProcStat(1 << 23).status().code(), base::StatusCode::kNotFound);
}

TEST(ProcStatTest, ParsesVmRss) {
  base::Result<uint64_t> rss = ParseVmRssBytes("Name:\tqemu\nVmPeak:\t 10 kB\nVmRSS:\t  2048 kB\n");
  ASSERT_TRUE(rss.ok());
  EXPECT_EQ(*rss, 2048u * 1024);
  EXPECT_EQ(*ParseVmRssBytes("Name:\tkthreadd\n"), 0u);
  EXPECT_FALSE(ParseVmRssBytes("VmRSS:\t12 MB\n").ok());
}

}  // namespace
TEST(ProcStatusFields, ParsesKeysAndTrimsLeadingBlanks) {
  auto f = ParseProcStatusFields(
      "Name:\tqemu-system-x86\nUid:\t900000\t900000\t900000\t900000\n"
      "CapEff:\t0000000000000000\nno colon here\nNoNewPrivs:\t1\nEmpty:\n");
  EXPECT_EQ(f["Name"], "qemu-system-x86");
  EXPECT_EQ(f["Uid"], "900000\t900000\t900000\t900000");
  EXPECT_EQ(f["CapEff"], "0000000000000000");
  EXPECT_EQ(f["NoNewPrivs"], "1");
  EXPECT_EQ(f["Empty"], "");
  EXPECT_EQ(f.size(), 5u);
}

TEST(ProcStatusFields, ReadsOwnProcessAndNothingForAMissingOne) {
  auto self = ReadProcStatusFields(::getpid());
  EXPECT_EQ(self["Pid"], std::to_string(::getpid()));
  EXPECT_TRUE(ReadProcStatusFields(0x3fffffff).empty());
}

}  // namespace metald::process

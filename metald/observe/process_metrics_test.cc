#include "metald/observe/process_metrics.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "metald/observe/testing/prometheus_text.h"

namespace metald::observe {
namespace {

namespace fs = std::filesystem;

class FakeProc {
 public:
  FakeProc() {
    std::string tmpl = (fs::temp_directory_path() / "observe_proc_XXXXXX").string();
    root_ = ::mkdtemp(tmpl.data());
    fs::create_directories(root_ + "/1234/fd");
  }
  ~FakeProc() { fs::remove_all(root_); }
  void Write(const std::string& rel, const std::string& content) {
    std::ofstream(root_ + "/" + rel) << content;
  }
  ProcessMetricsOptions Options() const {
    return {.proc_root = root_, .pid = "1234", .clock_ticks_per_second = 100, .page_size = 4096};
  }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

// A stat line whose command name contains spaces and parentheses. Fields (1-based): utime(14)=250,
// stime(15)=50, num_threads(20)=7, starttime(22)=1000, vsize(23)=123456789, rss(24)=300.
constexpr char kStat[] =
    "1234 (my (odd) daemon) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 "
    "123456789 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

TEST(ProcessMetricsTest, ReadsFakeProcTree) {
  FakeProc proc;
  proc.Write("1234/stat", kStat);
  proc.Write("stat", "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n");
  proc.Write("1234/limits",
             "Limit                     Soft Limit           Hard Limit           Units\n"
             "Max cpu time              unlimited            unlimited            seconds\n"
             "Max open files            1024                 524288               files\n");
  for (int i = 0; i < 5; ++i) proc.Write("1234/fd/" + std::to_string(i), "");

  auto stats = ReadProcessStats(proc.Options());
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_DOUBLE_EQ(stats->cpu_seconds, 3.0);
  EXPECT_DOUBLE_EQ(stats->threads, 7);
  EXPECT_DOUBLE_EQ(stats->virtual_memory_bytes, 123456789);
  EXPECT_DOUBLE_EQ(stats->resident_memory_bytes, 300.0 * 4096);
  EXPECT_DOUBLE_EQ(stats->start_time_seconds, 1700000010);
  EXPECT_DOUBLE_EQ(stats->open_fds, 5);
  EXPECT_DOUBLE_EQ(stats->max_fds, 1024);
}

TEST(ProcessMetricsTest, MissingOptionalSourcesLeaveFieldsUnset) {
  FakeProc proc;
  proc.Write("1234/stat", kStat);
  fs::remove(proc.root() + "/1234/fd");
  auto stats = ReadProcessStats(proc.Options());
  ASSERT_TRUE(stats.ok());
  EXPECT_LT(stats->start_time_seconds, 0);
  EXPECT_LT(stats->open_fds, 0);
  EXPECT_LT(stats->max_fds, 0);
  EXPECT_DOUBLE_EQ(stats->cpu_seconds, 3.0);

  MetricsRegistry registry;
  AddProcessMetrics(registry, proc.Options());
  auto e = testing::ParsePrometheusText(registry.RenderPrometheusText());
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->Value("process_cpu_seconds_total"), 3.0);
  EXPECT_FALSE(e->type.contains("process_open_fds"));
  EXPECT_FALSE(e->type.contains("process_start_time_seconds"));
}

TEST(ProcessMetricsTest, MissingOrMalformedStatIsAnError) {
  FakeProc proc;
  EXPECT_EQ(ReadProcessStats(proc.Options()).status().code(), base::StatusCode::kUnavailable);
  proc.Write("1234/stat", "1234 no-parens S 1\n");
  EXPECT_EQ(ReadProcessStats(proc.Options()).status().code(), base::StatusCode::kDataLoss);
  proc.Write("1234/stat", "1234 (short) S 1 2 3\n");
  EXPECT_EQ(ReadProcessStats(proc.Options()).status().code(), base::StatusCode::kDataLoss);

  MetricsRegistry registry;
  AddProcessMetrics(registry, proc.Options());
  EXPECT_EQ(registry.RenderPrometheusText(), "") << "an unreadable process yields no samples";
}

TEST(ProcessMetricsTest, RealProcSelfIsPlausibleAndTracksOpenFds) {
  auto before = ReadProcessStats();
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  EXPECT_GT(before->resident_memory_bytes, 0);
  EXPECT_GE(before->virtual_memory_bytes, before->resident_memory_bytes);
  EXPECT_GE(before->cpu_seconds, 0);
  EXPECT_GE(before->threads, 1);
  EXPECT_GT(before->max_fds, 0);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LE(before->start_time_seconds, now + 5);
  EXPECT_GT(before->start_time_seconds, now - 24 * 3600) << "test process started today";

  int fds[3];
  for (int& fd : fds) fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  auto after = ReadProcessStats();
  for (int fd : fds) ::close(fd);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->open_fds, before->open_fds + 3);

  MetricsRegistry registry;
  AddProcessMetrics(registry);
  auto e = testing::ParsePrometheusText(registry.RenderPrometheusText());
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                           "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                           "process_start_time_seconds", "process_threads"}) {
    EXPECT_TRUE(e->Value(name).has_value()) << name;
  }
  EXPECT_EQ(e->type["process_cpu_seconds_total"], "counter");
  EXPECT_EQ(e->type["process_resident_memory_bytes"], "gauge");
}

}  // namespace
}  // namespace metald::observe

#include "metald/observe/log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "metald/observe/testing/log_capture.h"

namespace metald::observe {
namespace {

using testing::CapturingLogSink;

// 2024-05-01T12:00:00.123456Z
std::chrono::system_clock::time_point FixedTime() {
  return std::chrono::system_clock::time_point(std::chrono::microseconds(1714564800123456LL));
}

LogRecord MakeRecord(Level level, std::string_view msg, std::span<const Field> fields) {
  LogRecord r;
  r.time = FixedTime();
  r.level = level;
  r.message = msg;
  r.fields = fields;
  return r;
}

TEST(LevelTest, NamesRoundTrip) {
  for (Level l : {Level::kDebug, Level::kInfo, Level::kWarn, Level::kError}) {
    auto parsed = ParseLevel(LevelName(l));
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, l);
  }
  EXPECT_EQ(ParseLevel("WARNING"), Level::kWarn);
  EXPECT_EQ(ParseLevel("Info"), Level::kInfo);
  EXPECT_FALSE(ParseLevel("verbose").has_value());
  EXPECT_FALSE(ParseLevel("").has_value());
}

TEST(FormatJsonLineTest, ExactOutput) {
  std::string id = "vm-1";
  std::vector<Field> fields = {{"vm_id", id}, {"ms", 12},
                               {"neg", -3},   {"big", uint64_t{1} << 63},
                               {"ok", true},  {"ratio", 0.5}};
  EXPECT_EQ(FormatJsonLine(MakeRecord(Level::kInfo, "VM booted", fields)),
            "{\"ts\":\"2024-05-01T12:00:00.123456Z\",\"level\":\"info\",\"msg\":\"VM booted\","
            "\"vm_id\":\"vm-1\",\"ms\":12,\"neg\":-3,\"big\":9223372036854775808,\"ok\":true,"
            "\"ratio\":0.5}\n");
}

TEST(FormatJsonLineTest, EscapesEverythingIntoValidJson) {
  const std::string nasty = std::string("quote\" back\\ nl\n tab\t nul") + '\0' + "\x01 \x7f" +
                            " bad\xff utf8 \xc3\xa9 trunc\xe2\x82";
  std::vector<Field> fields = {{"k\"ey", nasty},
                               {"nan", std::nan("")},
                               {"inf", std::numeric_limits<double>::infinity()},
                               {"null", static_cast<const char*>(nullptr)}};
  const std::string line = FormatJsonLine(MakeRecord(Level::kError, nasty, fields));
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "exactly one line";
  auto j = nlohmann::json::parse(line);  // throws (fails the test) on invalid JSON
  EXPECT_EQ(j["level"], "error");
  const std::string expected =
      std::string("quote\" back\\ nl\n tab\t nul") + '\0' +
      "\x01 \x7f bad\xef\xbf\xbd utf8 \xc3\xa9 trunc\xef\xbf\xbd\xef\xbf\xbd";
  EXPECT_EQ(j["msg"].get<std::string>(), expected);
  EXPECT_EQ(j["k\"ey"].get<std::string>(), expected);
  EXPECT_EQ(j["nan"], "NaN");
  EXPECT_EQ(j["inf"], "+Inf");
  EXPECT_TRUE(j["null"].is_null());
}

TEST(FormatJsonLineTest, ReservedKeysAreRenamed) {
  std::vector<Field> fields = {{"msg", "spoof"}, {"level", "debug"}, {"ts", 1}};
  auto j = nlohmann::json::parse(FormatJsonLine(MakeRecord(Level::kWarn, "real", fields)));
  EXPECT_EQ(j["msg"], "real");
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["ts"], "2024-05-01T12:00:00.123456Z");
  EXPECT_EQ(j["field.msg"], "spoof");
  EXPECT_EQ(j["field.level"], "debug");
  EXPECT_EQ(j["field.ts"], 1);
}

TEST(FormatJsonLineTest, StatusAndDurationFields) {
  std::vector<Field> fields = {{"err", base::NotFoundError("No such VM")},
                               {"elapsed", std::chrono::microseconds(2500)}};
  auto j = nlohmann::json::parse(FormatJsonLine(MakeRecord(Level::kInfo, "m", fields)));
  EXPECT_EQ(j["err"], "not_found: No such VM");
  EXPECT_EQ(j["elapsed"], 2);
}

TEST(FormatLogfmtLineTest, QuotesOnlyWhenNeeded) {
  std::vector<Field> fields = {{"vm_id", "vm-1"}, {"reason", "user request"},
                               {"eq", "a=b"},     {"empty", ""},
                               {"ms", 12},        {"bad key", true}};
  EXPECT_EQ(FormatLogfmtLine(MakeRecord(Level::kInfo, "VM booted", fields)),
            "ts=2024-05-01T12:00:00.123456Z level=info msg=\"VM booted\" vm_id=vm-1 "
            "reason=\"user request\" eq=\"a=b\" empty=\"\" ms=12 bad_key=true\n");
}

TEST(LoggerTest, DisabledLevelDoesNotFormatOrReadClock) {
  auto sink = std::make_shared<CapturingLogSink>();
  std::atomic<int> clock_calls{0};
  Logger log({.level = Level::kWarn, .sink = sink, .clock = [&clock_calls] {
                ++clock_calls;
                return FixedTime();
              }});
  EXPECT_FALSE(log.enabled(Level::kInfo));
  EXPECT_TRUE(log.enabled(Level::kError));
  log.Info("dropped", {{"k", 1}});
  log.Debug("dropped too");
  EXPECT_EQ(sink->size(), 0u);
  EXPECT_EQ(clock_calls.load(), 0);
  log.Warn("kept", {{"k", 2}});
  log.Error("kept too");
  EXPECT_EQ(sink->size(), 2u);
  EXPECT_EQ(clock_calls.load(), 2);
  auto rec = sink->Find("kept");
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->level, Level::kWarn);
  EXPECT_EQ(rec->Get("k"), "2");
}

TEST(LoggerTest, WithBindsOwnedCopiesAndSharesLevelAndSink) {
  auto sink = std::make_shared<CapturingLogSink>();
  Logger root({.level = Level::kInfo, .sink = sink, .clock = FixedTime});
  Logger child = [&root] {
    std::string temp_id = "vm-" + std::to_string(42);  // dies before the child logs
    return root.With({{"vm_id", temp_id}, {"component", "service"}});
  }();
  Logger grandchild = child.With({{"op", "BootVm"}});
  grandchild.Info("Booting", {{"attempt", 1}});
  auto rec = sink->Find("Booting");
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->Get("vm_id"), "vm-42");
  EXPECT_EQ(rec->Get("component"), "service");
  EXPECT_EQ(rec->Get("op"), "BootVm");
  EXPECT_EQ(rec->Get("attempt"), "1");
  EXPECT_EQ(rec->json_line,
            "{\"ts\":\"2024-05-01T12:00:00.123456Z\",\"level\":\"info\",\"msg\":\"Booting\","
            "\"vm_id\":\"vm-42\",\"component\":\"service\",\"op\":\"BootVm\",\"attempt\":1}\n");

  // The level and the sink live in the shared core.
  root.SetLevel(Level::kError);
  EXPECT_FALSE(grandchild.enabled(Level::kWarn));
  grandchild.Warn("suppressed");
  EXPECT_FALSE(sink->Find("suppressed").has_value());
  auto other = std::make_shared<CapturingLogSink>();
  grandchild.SetSink(other);
  root.Error("to other sink");
  EXPECT_TRUE(other->Find("to other sink").has_value());
  EXPECT_FALSE(sink->Find("to other sink").has_value());
  // The root logger has no bound fields.
  EXPECT_FALSE(other->Find("to other sink")->Get("vm_id").has_value());
}

TEST(LoggerTest, DefaultLoggerIsUsableAndConfigurable) {
  auto sink = std::make_shared<CapturingLogSink>();
  DefaultLogger().SetSink(sink);
  DefaultLogger().SetLevel(Level::kDebug);
  Log(Level::kDebug, "VM booted", {{"vm_id", "vm-7"}, {"ms", 12}});
  DefaultLogger().SetSink(nullptr);  // back to stderr
  DefaultLogger().SetLevel(Level::kInfo);
  auto rec = sink->Find("VM booted");
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->Get("ms"), "12");
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "observe_log_XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(StreamLogSinkTest, FileSinkAppendsJsonLines) {
  TempDir dir;
  const std::string path = dir.path() + "/metald.log";
  {
    auto sink = StreamLogSink::OpenFile(path);
    ASSERT_TRUE(sink.ok()) << sink.status().ToString();
    Logger log({.sink = std::shared_ptr<LogSink>(std::move(sink).value())});
    log.Info("first", {{"n", 1}});
    log.Error("second", {{"n", 2}});
  }
  {
    auto sink = StreamLogSink::OpenFile(path, LogFormat::kLogfmt);
    ASSERT_TRUE(sink.ok());
    Logger log({.sink = std::shared_ptr<LogSink>(std::move(sink).value())});
    log.Info("third");
  }
  auto lines = ReadLines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(nlohmann::json::parse(lines[0])["msg"], "first");
  EXPECT_EQ(nlohmann::json::parse(lines[1])["n"], 2);
  EXPECT_NE(lines[2].find(" level=info msg=third"), std::string::npos) << lines[2];
}

TEST(StreamLogSinkTest, OpenFileFailsAsValue) {
  auto sink = StreamLogSink::OpenFile("/nonexistent-dir/x/metald.log");
  ASSERT_FALSE(sink.ok());
  EXPECT_EQ(sink.status().code(), base::StatusCode::kUnavailable);
  EXPECT_NE(sink.status().message().find("/nonexistent-dir/x/metald.log"), std::string::npos);
}

TEST(StreamLogSinkTest, ConcurrentWritersNeverInterleaveLines) {
  TempDir dir;
  const std::string path = dir.path() + "/concurrent.log";
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  {
    auto sink = StreamLogSink::OpenFile(path);
    ASSERT_TRUE(sink.ok());
    Logger log({.sink = std::shared_ptr<LogSink>(std::move(sink).value())});
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([log, t] {
        Logger mine = log.With({{"thread", t}});
        const std::string padding(200, 'x');  // long lines make interleaving likely if unlocked
        for (int i = 0; i < kPerThread; ++i) mine.Info("tick", {{"i", i}, {"pad", padding}});
      });
    }
    for (auto& th : threads) th.join();
  }
  auto lines = ReadLines(path);
  ASSERT_EQ(lines.size(), static_cast<size_t>(kThreads * kPerThread));
  std::set<std::pair<int, int>> seen;
  for (const auto& line : lines) {
    auto j = nlohmann::json::parse(line);
    seen.emplace(j["thread"].get<int>(), j["i"].get<int>());
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kThreads * kPerThread));
}

}  // namespace
}  // namespace metald::observe

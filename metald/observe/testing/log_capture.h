#pragma once
// CapturingLogSink: a LogSink for tests that keeps every record (owned copies) in memory, so a
// test can assert what was logged. Thread-safe: records may arrive from many threads.
// Test-only (library metald_observe_testing); production targets must not link it.

#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "metald/observe/log.h"

namespace metald::observe::testing {

struct CapturedRecord {
  Level level = Level::kInfo;
  std::string message;
  // Context fields then call fields; every value owns its bytes. A later duplicate key wins.
  std::map<std::string, FieldValue, std::less<>> fields;
  // The record exactly as FormatJsonLine renders it (with its '\n').
  std::string json_line;

  // The field as text: strings verbatim, numbers/bools as JSON renders them; nullopt if absent.
  std::optional<std::string> Get(std::string_view key) const;
};

class CapturingLogSink : public LogSink {
 public:
  void Write(const LogRecord& record) override;

  // A snapshot of everything captured so far, in arrival order.
  std::vector<CapturedRecord> records() const;
  size_t size() const;
  // The first record whose message equals `message`, if any.
  std::optional<CapturedRecord> Find(std::string_view message) const;
  void Clear();

 private:
  mutable std::mutex mutex_;
  std::vector<CapturedRecord> records_;  // guarded by mutex_
};

}  // namespace metald::observe::testing

#pragma once
// Structured logging: one record = a level, a message and key=value fields, written as one JSON
// object per line (or logfmt) to stderr, a file or a test sink.
//
//   observe::Log(Level::kInfo, "VM booted", {{"vm_id", id}, {"ms", 12}});
//   observe::Logger vm_log = observe::DefaultLogger().With({{"vm_id", id}});
//   vm_log.Warn("Guest did not answer power button", {{"timeout_ms", 5000}});
//
// Concurrency model: every Logger method may be called from any thread at any time. A Logger is a
// cheap value (a shared pointer to its core plus its bound fields); copies and the loggers made by
// With() share the core, so SetLevel()/SetSink() on any of them applies to all. A disabled level
// costs one relaxed atomic load: no formatting, no allocation, no lock (string field values are
// views). Sinks serialise their own writes, so lines from different threads never interleave.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "metald/base/status.h"

namespace metald::observe {

enum class Level : int { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// "debug", "info", "warn", "error".
std::string_view LevelName(Level level);
// Inverse of LevelName; also accepts "warning" and upper case. nullopt for anything else.
std::optional<Level> ParseLevel(std::string_view name);

// A field value: a string (viewed or owned), a signed or unsigned integer, a double or a bool.
// Implicit conversions make `{"vm_id", id}` and `{"ms", 12}` work.
// Lifetime: a string value built from a std::string / string_view / const char* is a VIEW; it is
// valid for the full expression that logs it, which is all a Fields list is for. Never store a
// Field; Logger::With() copies what it keeps.
class FieldValue {
 public:
  using Storage =
      std::variant<std::string_view, std::string, int64_t, uint64_t, double, bool, std::nullptr_t>;

  FieldValue(std::string_view v) : v_(v) {}  // NOLINT(google-explicit-constructor)
  FieldValue(const char* v)                  // NOLINT(google-explicit-constructor)
      : v_(v == nullptr ? Storage(nullptr) : Storage(std::string_view(v))) {}
  FieldValue(const std::string& v) : v_(std::string_view(v)) {}  // NOLINT
  // A temporary string is owned (moved), so `{"err", s.ToString()}` cannot dangle.
  FieldValue(std::string&& v) : v_(std::move(v)) {}    // NOLINT(google-explicit-constructor)
  FieldValue(bool v) : v_(v) {}                        // NOLINT(google-explicit-constructor)
  FieldValue(double v) : v_(v) {}                      // NOLINT(google-explicit-constructor)
  FieldValue(float v) : v_(static_cast<double>(v)) {}  // NOLINT(google-explicit-constructor)
  template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool> &&
                                             !std::is_same_v<T, char>,
                                         int> = 0>
  FieldValue(T v)  // NOLINT(google-explicit-constructor)
      : v_(std::is_signed_v<T> ? Storage(static_cast<int64_t>(v))
                               : Storage(static_cast<uint64_t>(v))) {}
  // A Status logs as "invalid_argument: message" (or "ok").
  FieldValue(const base::Status& s) : v_(s.ToString()) {}  // NOLINT(google-explicit-constructor)
  // A duration logs as an integer number of milliseconds.
  template <typename Rep, typename Period>
  FieldValue(std::chrono::duration<Rep, Period> d)  // NOLINT(google-explicit-constructor)
      : v_(static_cast<int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count())) {
  }

  const Storage& storage() const { return v_; }
  // Returns an owning copy (string views become strings).
  FieldValue ToOwned() const;

 private:
  Storage v_;
};

struct Field {
  std::string_view key;
  FieldValue value;
};

// What a call site passes: `{{"k", v}, ...}`.
using Fields = std::initializer_list<Field>;

// One record as handed to a sink. Views (message, fields) are valid only during LogSink::Write.
struct LogRecord {
  std::chrono::system_clock::time_point time;
  Level level = Level::kInfo;
  std::string_view message;
  // Bound fields of the logger (from With()), then the call's own fields, in that order.
  std::span<const Field> context;
  std::span<const Field> fields;
};

// One JSON object on one line, with a trailing '\n':
//   {"ts":"2024-05-01T12:00:00.123456Z","level":"info","msg":"VM booted","vm_id":"vm-1","ms":12}
// Strings are escaped (control characters as \u00XX, invalid UTF-8 as U+FFFD), so every line is
// valid JSON. NaN/Inf doubles are written as strings. A field whose key is "ts", "level" or "msg"
// is written as "field.<key>" so the reserved keys stay unambiguous.
std::string FormatJsonLine(const LogRecord& record);
// logfmt: `ts=2024-...Z level=info msg="VM booted" vm_id=vm-1 ms=12` plus '\n'; values with
// spaces, '=', '"' or control characters are quoted and escaped.
std::string FormatLogfmtLine(const LogRecord& record);

enum class LogFormat { kJson, kLogfmt };

// Destination of records. Implementations must be thread-safe: Write is called concurrently.
class LogSink {
 public:
  virtual ~LogSink() = default;
  // Writes one record. Must not throw and must not call back into a Logger sharing this sink.
  virtual void Write(const LogRecord& record) = 0;
  // Pushes buffered output to its destination. Default: nothing to do.
  virtual void Flush() {}
};

// Writes formatted lines to a stdio FILE* (stderr by default) or to a file it opens.
// Thread-safe: one mutex serialises formatting-independent writes; each record is one fwrite.
class StreamLogSink : public LogSink {
 public:
  // Does not take ownership of `out` (e.g. stderr). REQUIRES: out outlives the sink.
  explicit StreamLogSink(std::FILE* out = stderr, LogFormat format = LogFormat::kJson);
  // Opens `path` for appending (created 0640 if missing); the sink owns and closes it.
  static base::Result<std::unique_ptr<StreamLogSink>> OpenFile(const std::string& path,
                                                               LogFormat format = LogFormat::kJson);
  ~StreamLogSink() override;
  StreamLogSink(const StreamLogSink&) = delete;
  StreamLogSink& operator=(const StreamLogSink&) = delete;

  void Write(const LogRecord& record) override;
  void Flush() override;

 private:
  StreamLogSink(std::FILE* out, LogFormat format, bool owned);

  // Constant after construction.
  std::FILE* const out_;
  const LogFormat format_;
  const bool owned_;
  // Serialises fwrite/fflush on out_.
  std::mutex mutex_;
};

struct LoggerOptions {
  // Records below this level are dropped before any formatting. Default: kInfo.
  Level level = Level::kInfo;
  // Where records go. Default (nullptr): a StreamLogSink on stderr, JSON.
  std::shared_ptr<LogSink> sink = nullptr;
  // Wall clock for record timestamps (tests inject a fixed one). Default: system_clock::now.
  std::function<std::chrono::system_clock::time_point()> clock = nullptr;
};

// A handle for logging with bound context fields. See the file comment for the concurrency model.
class Logger {
 public:
  explicit Logger(LoggerOptions options = {});

  // True when a record at `level` would be written. One relaxed atomic load.
  bool enabled(Level level) const {
    return static_cast<int>(level) >= core_->level.load(std::memory_order_relaxed);
  }
  // Sets the minimum level for this logger and every logger sharing its core.
  void SetLevel(Level level);
  Level level() const;
  // Replaces the sink for this logger and every logger sharing its core. nullptr = stderr JSON.
  // Records being written concurrently finish on the old sink.
  void SetSink(std::shared_ptr<LogSink> sink);

  // Returns a logger sharing this one's core whose records also carry `fields` (after this
  // logger's own bound fields). The values are copied.
  Logger With(Fields fields) const;

  // Writes one record when enabled(level).
  void Log(Level level, std::string_view message, Fields fields = {}) const {
    if (enabled(level)) Write(level, message, fields);
  }
  void Debug(std::string_view message, Fields fields = {}) const {
    Log(Level::kDebug, message, fields);
  }
  void Info(std::string_view message, Fields fields = {}) const {
    Log(Level::kInfo, message, fields);
  }
  void Warn(std::string_view message, Fields fields = {}) const {
    Log(Level::kWarn, message, fields);
  }
  void Error(std::string_view message, Fields fields = {}) const {
    Log(Level::kError, message, fields);
  }
  // Flushes the current sink.
  void Flush() const;

 private:
  // Shared by a logger, its copies and its With() children.
  struct Core {
    std::atomic<int> level{static_cast<int>(Level::kInfo)};
    std::function<std::chrono::system_clock::time_point()> clock;  // constant after construction
    std::mutex mutex;                                              // guards sink
    std::shared_ptr<LogSink> sink;                                 // guarded by mutex; never null
  };

  void Write(Level level, std::string_view message, Fields fields) const;

  // Bound fields. Invariants: immutable once built (shared between copies); every value owns its
  // bytes (std::string, never a view); every key views a string in `keys`, whose buffer is never
  // reallocated after the fields are built.
  struct Context {
    std::vector<std::string> keys;
    std::vector<Field> fields;
  };

  std::shared_ptr<Core> core_;
  std::shared_ptr<const Context> context_;  // null when no fields are bound
};

// The process-wide logger (stderr, JSON, kInfo until configured). The daemon configures it once
// at startup with SetLevel/SetSink; any thread may use it at any time.
Logger& DefaultLogger();

// Logs through DefaultLogger().
inline void Log(Level level, std::string_view message, Fields fields = {}) {
  DefaultLogger().Log(level, message, fields);
}

}  // namespace metald::observe

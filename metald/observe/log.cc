#include "metald/observe/log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <ctime>

namespace metald::observe {
namespace {

constexpr std::string_view kHex = "0123456789abcdef";

// Length of the valid UTF-8 sequence at s[i], or 0 when it is invalid (overlong, surrogate,
// out of range or truncated).
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2;
    cp = b0 & 0x1F;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3;
    cp = b0 & 0x0F;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4;
    cp = b0 & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

// Appends `s` as a quoted JSON string.
void AppendJsonString(std::string& out, std::string_view s) {
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t len = Utf8SequenceLength(s, i);
      if (len == 0) {
        out.append("\\ufffd");
        ++i;
      } else {
        out.append(s.substr(i, len));
        i += len;
      }
      continue;
    }
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out.append("\\u00");
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xF]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out.push_back('"');
}

template <typename T>
void AppendNumber(std::string& out, T v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  (void)ec;  // 32 bytes always suffice for these types
  out.append(buf, end);
}

// "2024-05-01T12:00:00.123456Z" (UTC, microseconds).
void AppendTimestamp(std::string& out, std::chrono::system_clock::time_point t) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch());
  auto secs = std::chrono::floor<std::chrono::seconds>(us);
  const auto frac = (us - secs).count();
  const std::time_t tt = static_cast<std::time_t>(secs.count());
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[48];
  const int n = std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ",
                              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                              tm.tm_sec, static_cast<long long>(frac));
  out.append(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

bool IsReservedKey(std::string_view key) { return key == "ts" || key == "level" || key == "msg"; }

void AppendJsonValue(std::string& out, const FieldValue& value) {
  std::visit(
      [&out](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string_view> || std::is_same_v<T, std::string>) {
          AppendJsonString(out, v);
        } else if constexpr (std::is_same_v<T, bool>) {
          out.append(v ? "true" : "false");
        } else if constexpr (std::is_same_v<T, double>) {
          if (std::isfinite(v)) {
            AppendNumber(out, v);
          } else {
            AppendJsonString(out, std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf"));
          }
        } else if constexpr (std::is_same_v<T, std::nullptr_t>) {
          out.append("null");
        } else {
          AppendNumber(out, v);
        }
      },
      value.storage());
}

void AppendJsonFields(std::string& out, std::span<const Field> fields) {
  for (const Field& f : fields) {
    out.push_back(',');
    if (IsReservedKey(f.key)) {
      AppendJsonString(out, "field." + std::string(f.key));
    } else {
      AppendJsonString(out, f.key);
    }
    out.push_back(':');
    AppendJsonValue(out, f.value);
  }
}

// logfmt value: bare when it has no space, '=', '"', '\\' or control byte, else a JSON-style
// quoted string (logfmt parsers accept Go-style escapes).
void AppendLogfmtString(std::string& out, std::string_view s) {
  bool bare = !s.empty();
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == '=' || c == '"' || c == '\\' || c == 0x7F || c >= 0x80) {
      bare = false;
      break;
    }
  }
  if (bare) {
    out.append(s);
  } else {
    AppendJsonString(out, s);
  }
}

// logfmt keys cannot be quoted: bytes that would break the key are replaced by '_'.
void AppendLogfmtKey(std::string& out, std::string_view key) {
  if (key.empty()) {
    out.push_back('_');
    return;
  }
  for (char ch : key) {
    const auto c = static_cast<unsigned char>(ch);
    out.push_back((c <= 0x20 || c == '=' || c == '"' || c >= 0x7F) ? '_' : ch);
  }
}

void AppendLogfmtFields(std::string& out, std::span<const Field> fields) {
  for (const Field& f : fields) {
    out.push_back(' ');
    if (IsReservedKey(f.key)) out.append("field.");
    AppendLogfmtKey(out, f.key);
    out.push_back('=');
    std::visit(
        [&out](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::string_view> || std::is_same_v<T, std::string>) {
            AppendLogfmtString(out, v);
          } else if constexpr (std::is_same_v<T, bool>) {
            out.append(v ? "true" : "false");
          } else if constexpr (std::is_same_v<T, double>) {
            if (std::isfinite(v)) {
              AppendNumber(out, v);
            } else {
              out.append(std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf"));
            }
          } else if constexpr (std::is_same_v<T, std::nullptr_t>) {
            out.append("null");
          } else {
            AppendNumber(out, v);
          }
        },
        f.value.storage());
  }
}

}  // namespace

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "unknown";
}

std::optional<Level> ParseLevel(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  if (lower == "debug") return Level::kDebug;
  if (lower == "info") return Level::kInfo;
  if (lower == "warn" || lower == "warning") return Level::kWarn;
  if (lower == "error") return Level::kError;
  return std::nullopt;
}

FieldValue FieldValue::ToOwned() const {
  FieldValue copy = *this;
  if (const auto* view = std::get_if<std::string_view>(&v_)) copy.v_ = std::string(*view);
  return copy;
}

std::string FormatJsonLine(const LogRecord& record) {
  std::string out;
  out.reserve(128);
  out.append("{\"ts\":\"");
  AppendTimestamp(out, record.time);
  out.append("\",\"level\":\"");
  out.append(LevelName(record.level));
  out.append("\",\"msg\":");
  AppendJsonString(out, record.message);
  AppendJsonFields(out, record.context);
  AppendJsonFields(out, record.fields);
  out.append("}\n");
  return out;
}

std::string FormatLogfmtLine(const LogRecord& record) {
  std::string out;
  out.reserve(128);
  out.append("ts=");
  AppendTimestamp(out, record.time);
  out.append(" level=");
  out.append(LevelName(record.level));
  out.append(" msg=");
  AppendLogfmtString(out, record.message);
  AppendLogfmtFields(out, record.context);
  AppendLogfmtFields(out, record.fields);
  out.push_back('\n');
  return out;
}

StreamLogSink::StreamLogSink(std::FILE* out, LogFormat format)
    : StreamLogSink(out, format, /*owned=*/false) {}

StreamLogSink::StreamLogSink(std::FILE* out, LogFormat format, bool owned)
    : out_(out), format_(format), owned_(owned) {}

base::Result<std::unique_ptr<StreamLogSink>> StreamLogSink::OpenFile(const std::string& path,
                                                                     LogFormat format) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    return base::UnavailableError("Cannot open log file " + path + ": " + std::strerror(errno));
  }
  std::FILE* f = ::fdopen(fd, "a");
  if (f == nullptr) {
    const int err = errno;
    ::close(fd);
    return base::InternalError("Cannot open log file " + path + ": " + std::strerror(err));
  }
  return std::unique_ptr<StreamLogSink>(new StreamLogSink(f, format, /*owned=*/true));
}

StreamLogSink::~StreamLogSink() {
  if (owned_) {
    std::fclose(out_);
  } else {
    std::fflush(out_);
  }
}

void StreamLogSink::Write(const LogRecord& record) {
  const std::string line =
      format_ == LogFormat::kJson ? FormatJsonLine(record) : FormatLogfmtLine(record);
  std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), out_);
  // Warnings and errors must survive a crash right after them; info lines may sit in the buffer.
  if (record.level >= Level::kWarn || out_ == stderr) std::fflush(out_);
}

void StreamLogSink::Flush() {
  std::lock_guard lock(mutex_);
  std::fflush(out_);
}

Logger::Logger(LoggerOptions options) : core_(std::make_shared<Core>()) {
  core_->level.store(static_cast<int>(options.level), std::memory_order_relaxed);
  core_->clock =
      options.clock ? std::move(options.clock) : [] { return std::chrono::system_clock::now(); };
  core_->sink = options.sink ? std::move(options.sink) : std::make_shared<StreamLogSink>();
}

void Logger::SetLevel(Level level) {
  core_->level.store(static_cast<int>(level), std::memory_order_relaxed);
}

Level Logger::level() const {
  return static_cast<Level>(core_->level.load(std::memory_order_relaxed));
}

void Logger::SetSink(std::shared_ptr<LogSink> sink) {
  if (!sink) sink = std::make_shared<StreamLogSink>();
  std::lock_guard lock(core_->mutex);
  core_->sink = std::move(sink);
}

Logger Logger::With(Fields fields) const {
  auto ctx = std::make_shared<Context>();
  const size_t n = (context_ ? context_->fields.size() : 0) + fields.size();
  // Reserve first: keys are views into `keys`, which must never reallocate afterwards.
  ctx->keys.reserve(n);
  ctx->fields.reserve(n);
  auto add = [&ctx](const Field& f) {
    ctx->keys.emplace_back(f.key);
    ctx->fields.push_back(Field{ctx->keys.back(), f.value.ToOwned()});
  };
  if (context_) {
    for (const Field& f : context_->fields) add(f);
  }
  for (const Field& f : fields) add(f);
  Logger child = *this;
  child.context_ = std::move(ctx);
  return child;
}

void Logger::Write(Level level, std::string_view message, Fields fields) const {
  std::shared_ptr<LogSink> sink;
  {
    std::lock_guard lock(core_->mutex);
    sink = core_->sink;
  }
  LogRecord record;
  record.time = core_->clock();
  record.level = level;
  record.message = message;
  if (context_) record.context = context_->fields;
  record.fields = std::span<const Field>(fields.begin(), fields.size());
  sink->Write(record);
}

void Logger::Flush() const {
  std::shared_ptr<LogSink> sink;
  {
    std::lock_guard lock(core_->mutex);
    sink = core_->sink;
  }
  sink->Flush();
}

Logger& DefaultLogger() {
  // Leaked on purpose: logging must keep working from static destructors and detached threads.
  static Logger* const logger = new Logger();
  return *logger;
}

}  // namespace metald::observe

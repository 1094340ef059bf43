#include "metald/observe/testing/log_capture.h"

#include <charconv>
#include <type_traits>
#include <variant>

namespace metald::observe::testing {

std::optional<std::string> CapturedRecord::Get(std::string_view key) const {
  auto it = fields.find(key);
  if (it == fields.end()) return std::nullopt;
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string_view> || std::is_same_v<T, std::string>) {
          return std::string(v);
        } else if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::nullptr_t>) {
          return "null";
        } else {
          char buf[32];
          auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
          (void)ec;
          return std::string(buf, end);
        }
      },
      it->second.storage());
}

void CapturingLogSink::Write(const LogRecord& record) {
  CapturedRecord r;
  r.level = record.level;
  r.message = std::string(record.message);
  for (const Field& f : record.context)
    r.fields.insert_or_assign(std::string(f.key), f.value.ToOwned());
  for (const Field& f : record.fields)
    r.fields.insert_or_assign(std::string(f.key), f.value.ToOwned());
  r.json_line = FormatJsonLine(record);
  std::lock_guard lock(mutex_);
  records_.push_back(std::move(r));
}

std::vector<CapturedRecord> CapturingLogSink::records() const {
  std::lock_guard lock(mutex_);
  return records_;
}

size_t CapturingLogSink::size() const {
  std::lock_guard lock(mutex_);
  return records_.size();
}

std::optional<CapturedRecord> CapturingLogSink::Find(std::string_view message) const {
  std::lock_guard lock(mutex_);
  for (const CapturedRecord& r : records_) {
    if (r.message == message) return r;
  }
  return std::nullopt;
}

void CapturingLogSink::Clear() {
  std::lock_guard lock(mutex_);
  records_.clear();
}

}  // namespace metald::observe::testing

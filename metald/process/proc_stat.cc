#include "metald/process/proc_stat.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <vector>

namespace metald::process {
namespace {

base::Result<std::string> ReadProcFile(pid_t pid, const char* name) {
  std::string path = "/proc/" + std::to_string(pid) + "/" + name;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT || err == ESRCH) {
      return base::NotFoundError("Process " + std::to_string(pid) + " does not exist");
    }
    return base::InternalError("open " + path + ": " + std::strerror(err) + " (errno " +
                               std::to_string(err) + ")");
  }
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  // A process that exits between open and read yields ESRCH or nothing.
  if (text.empty()) {
    return base::NotFoundError("Process " + std::to_string(pid) + " does not exist");
  }
  return text;
}

bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

}  // namespace

base::Result<ProcStat> ParseProcStat(std::string_view text) {
  size_t close = text.rfind(')');
  if (close == std::string_view::npos || text.find('(') == std::string_view::npos) {
    return base::InvalidArgumentError("Malformed /proc stat: no command name");
  }
  // Fields after ") ": field 3 (state) is the first.
  std::vector<std::string_view> fields;
  std::string_view rest = text.substr(close + 1);
  size_t i = 0;
  while (i < rest.size()) {
    while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\n')) ++i;
    size_t start = i;
    while (i < rest.size() && rest[i] != ' ' && rest[i] != '\n') ++i;
    if (i > start) fields.push_back(rest.substr(start, i - start));
  }
  // fields[k] is field k + 3.
  constexpr size_t kStartTimeIndex = 22 - 3;
  if (fields.size() <= kStartTimeIndex) {
    return base::InvalidArgumentError("Malformed /proc stat: " + std::to_string(fields.size() + 2) +
                                      " fields");
  }
  ProcStat stat;
  if (fields[0].size() != 1) return base::InvalidArgumentError("Malformed /proc stat: state");
  stat.state = fields[0][0];
  if (!ParseU64(fields[14 - 3], &stat.utime) || !ParseU64(fields[15 - 3], &stat.stime) ||
      !ParseU64(fields[kStartTimeIndex], &stat.start_time)) {
    return base::InvalidArgumentError("Malformed /proc stat: times");
  }
  return stat;
}

base::Result<uint64_t> ParseVmRssBytes(std::string_view status_text) {
  size_t pos = 0;
  while (pos < status_text.size()) {
    size_t end = status_text.find('\n', pos);
    if (end == std::string_view::npos) end = status_text.size();
    std::string_view line = status_text.substr(pos, end - pos);
    pos = end + 1;
    if (!line.starts_with("VmRSS:")) continue;
    line.remove_prefix(6);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    size_t sp = line.find(' ');
    uint64_t kib = 0;
    if (sp == std::string_view::npos || line.substr(sp + 1) != "kB" ||
        !ParseU64(line.substr(0, sp), &kib)) {
      return base::InvalidArgumentError("Malformed VmRSS line");
    }
    return kib * 1024;
  }
  return uint64_t{0};
}

base::Result<ProcStat> ReadProcStat(pid_t pid) {
  ASSIGN_OR_RETURN(std::string text, ReadProcFile(pid, "stat"));
  return ParseProcStat(text);
}

base::Result<uint64_t> ReadVmRssBytes(pid_t pid) {
  ASSIGN_OR_RETURN(std::string text, ReadProcFile(pid, "status"));
  return ParseVmRssBytes(text);
}

std::map<std::string, std::string> ParseProcStatusFields(std::string_view status_text) {
  std::map<std::string, std::string> fields;
  while (!status_text.empty()) {
    size_t end = status_text.find('\n');
    std::string_view line = status_text.substr(0, end);
    status_text.remove_prefix(end == std::string_view::npos ? status_text.size() : end + 1);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view value = line.substr(colon + 1);
    size_t start = value.find_first_not_of(" \t");
    value.remove_prefix(start == std::string_view::npos ? value.size() : start);
    fields[std::string(line.substr(0, colon))] = std::string(value);
  }
  return fields;
}

std::map<std::string, std::string> ReadProcStatusFields(pid_t pid) {
  base::Result<std::string> text = ReadProcFile(pid, "status");
  if (!text.ok()) return {};
  return ParseProcStatusFields(*text);
}

}  // namespace metald::process

#include "metald/observe/process_metrics.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <vector>

namespace metald::observe {
namespace {

bool ReadFile(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

bool ParseDouble(std::string_view s, double& out) {
  std::string copy(s);
  char* end = nullptr;
  out = std::strtod(copy.c_str(), &end);
  return !copy.empty() && end == copy.c_str() + copy.size();
}

// "btime <seconds>" from /proc/stat, or -1.
double BootTimeSeconds(const std::string& proc_root) {
  std::ifstream in(proc_root + "/stat");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("btime ")) {
      double v;
      if (ParseDouble(line.substr(6), v)) return v;
    }
  }
  return -1;
}

// Soft limit of "Max open files" from <pid>/limits, or -1 (also for "unlimited").
double MaxOpenFiles(const std::string& limits_path) {
  std::ifstream in(limits_path);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("Max open files")) continue;
    std::istringstream fields(line.substr(std::string_view("Max open files").size()));
    std::string soft;
    fields >> soft;
    double v;
    return ParseDouble(soft, v) ? v : -1;
  }
  return -1;
}

}  // namespace

base::Result<ProcessStats> ReadProcessStats(const ProcessMetricsOptions& options) {
  const std::string dir = options.proc_root + "/" + options.pid;
  const double ticks = static_cast<double>(
      options.clock_ticks_per_second > 0 ? options.clock_ticks_per_second : sysconf(_SC_CLK_TCK));
  const double page =
      static_cast<double>(options.page_size > 0 ? options.page_size : sysconf(_SC_PAGESIZE));

  std::string stat;
  if (!ReadFile(dir + "/stat", stat)) {
    return base::UnavailableError("Cannot read " + dir + "/stat");
  }
  // The command name (field 2) is in parentheses and may itself contain spaces and ')': the
  // fields we need follow the LAST ')'. After it, fields[0] is field 3 (state).
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return base::DataLossError("Malformed " + dir + "/stat");
  std::vector<std::string> fields;
  {
    std::istringstream ss(stat.substr(close + 1));
    for (std::string f; ss >> f;) fields.push_back(f);
  }
  // Field n (1-based, proc(5)) is fields[n - 3].
  auto field = [&fields](int n, double& out) {
    const size_t i = static_cast<size_t>(n - 3);
    return i < fields.size() && ParseDouble(fields[i], out);
  };
  double utime, stime, threads, starttime, vsize, rss;
  if (!field(14, utime) || !field(15, stime) || !field(20, threads) || !field(22, starttime) ||
      !field(23, vsize) || !field(24, rss)) {
    return base::DataLossError("Malformed " + dir + "/stat");
  }
  ProcessStats s;
  s.cpu_seconds = (utime + stime) / ticks;
  s.threads = threads;
  s.virtual_memory_bytes = vsize;
  s.resident_memory_bytes = rss * page;
  const double btime = BootTimeSeconds(options.proc_root);
  if (btime >= 0) s.start_time_seconds = btime + starttime / ticks;

  std::error_code ec;
  std::filesystem::directory_iterator it(dir + "/fd", ec);
  if (!ec) {
    double n = 0;
    for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
      if (ec) break;
      ++n;
    }
    // Reading our own fd directory opens one descriptor for the iterator itself; it is closed
    // again once we return, so it is not counted.
    if (!ec) s.open_fds = options.pid == "self" && n > 0 ? n - 1 : n;
  }
  s.max_fds = MaxOpenFiles(dir + "/limits");
  return s;
}

void AddProcessMetrics(MetricsRegistry& registry, ProcessMetricsOptions options) {
  registry.AddCollector([options = std::move(options)]() {
    std::vector<CollectedSample> out;
    auto stats = ReadProcessStats(options);
    if (!stats.ok()) return out;
    auto add = [&out](const char* name, const char* help, MetricKind kind, double v) {
      if (v >= 0) out.push_back(CollectedSample{name, help, kind, {}, v});
    };
    add("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
        MetricKind::kCounter, stats->cpu_seconds);
    add("process_resident_memory_bytes", "Resident memory size in bytes.", MetricKind::kGauge,
        stats->resident_memory_bytes);
    add("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricKind::kGauge,
        stats->virtual_memory_bytes);
    add("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
        MetricKind::kGauge, stats->start_time_seconds);
    add("process_threads", "Number of OS threads in the process.", MetricKind::kGauge,
        stats->threads);
    add("process_open_fds", "Number of open file descriptors.", MetricKind::kGauge,
        stats->open_fds);
    add("process_max_fds", "Maximum number of open file descriptors.", MetricKind::kGauge,
        stats->max_fds);
    return out;
  });
}

}  // namespace metald::observe

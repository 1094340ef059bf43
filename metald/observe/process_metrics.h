#pragma once
// Process metrics read from procfs at scrape time, under the names every Prometheus client uses:
// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds, process_start_time_seconds, process_threads.
// Thread-safety: stateless functions; the collector may run on any thread.

#include <string>

#include "metald/base/status.h"
#include "metald/observe/metrics.h"

namespace metald::observe {

struct ProcessMetricsOptions {
  // procfs mount point; tests point it at a fake tree. Default: "/proc".
  std::string proc_root = "/proc";
  // The process to describe, as a directory under proc_root. Default: "self".
  std::string pid = "self";
  // Kernel clock ticks per second (utime/stime/starttime unit). Default 0: sysconf(_SC_CLK_TCK).
  long clock_ticks_per_second = 0;
  // Bytes per page (rss unit). Default 0: sysconf(_SC_PAGESIZE).
  long page_size = 0;
};

// One reading. A field is negative when its source file could not be read or parsed.
struct ProcessStats {
  double cpu_seconds = -1;            // utime + stime
  double resident_memory_bytes = -1;  // rss pages * page size
  double virtual_memory_bytes = -1;   // vsize
  double start_time_seconds = -1;     // since the Unix epoch (starttime + btime from /proc/stat)
  double threads = -1;                // num_threads
  double open_fds = -1;               // entries in <pid>/fd
  double max_fds = -1;                // soft "Max open files" from <pid>/limits
};

// Reads <proc_root>/<pid>/{stat,fd,limits} and <proc_root>/stat.
// Errors: unavailable when <pid>/stat cannot be read, data_loss when it cannot be parsed.
// Other sources failing leave their fields negative.
base::Result<ProcessStats> ReadProcessStats(const ProcessMetricsOptions& options = {});

// Adds a collector that reports the process_* metrics on every scrape (fields that could not be
// read are omitted). Call once per registry.
void AddProcessMetrics(MetricsRegistry& registry, ProcessMetricsOptions options = {});

}  // namespace metald::observe

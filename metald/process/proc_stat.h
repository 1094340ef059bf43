#pragma once
// Parsers for /proc/<pid>/stat and /proc/<pid>/status, separated from the reads so that they are
// testable on fixed text. Thread-safety: pure functions, and reads of /proc.

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "metald/base/status.h"

namespace metald::process {

// The fields of /proc/<pid>/stat that metald uses.
struct ProcStat {
  char state = '?';         // Field 3: R, S, D, Z, T, t, X, I, ...
  uint64_t utime = 0;       // Field 14, clock ticks.
  uint64_t stime = 0;       // Field 15, clock ticks.
  uint64_t start_time = 0;  // Field 22, clock ticks after boot.
};

// Parses the text of /proc/<pid>/stat. The command name (field 2) is in parentheses and may itself
// contain spaces and ')', so fields are counted from the last ')'. invalid_argument when the text
// is not in that shape.
base::Result<ProcStat> ParseProcStat(std::string_view text);

// The VmRSS line of /proc/<pid>/status in bytes; 0 when absent (kernel threads, zombies).
// invalid_argument for a malformed VmRSS line.
base::Result<uint64_t> ParseVmRssBytes(std::string_view status_text);

// Every "Key:<blanks>value" line of a /proc/<pid>/status text, value without its leading blanks
// ("Uid" -> "1000\t1000\t1000\t1000", "CapEff" -> "0000000000000000"). Lines without ':' are
// skipped; a repeated key keeps its last value.
std::map<std::string, std::string> ParseProcStatusFields(std::string_view status_text);

// Reads /proc/<pid>/status and returns ParseProcStatusFields of it; empty when the process does
// not exist.
std::map<std::string, std::string> ReadProcStatusFields(pid_t pid);

// Reads and parses /proc/<pid>/stat. not_found when the process does not exist.
base::Result<ProcStat> ReadProcStat(pid_t pid);

// Reads /proc/<pid>/status and returns VmRSS in bytes. not_found when the process does not exist.
base::Result<uint64_t> ReadVmRssBytes(pid_t pid);

}  // namespace metald::process

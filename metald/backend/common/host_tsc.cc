#include "metald/backend/common/host_tsc.h"

#include <time.h>
#include <x86intrin.h>

#include <charconv>
#include <fstream>
#include <sstream>
#include <string>

namespace metald::backend::common {
namespace {

bool HasFlag(std::string_view flags_line, std::string_view flag) {
  size_t pos = 0;
  while ((pos = flags_line.find(flag, pos)) != std::string_view::npos) {
    bool start = pos == 0 || flags_line[pos - 1] == ' ' || flags_line[pos - 1] == '\t';
    size_t end = pos + flag.size();
    bool stop = end == flags_line.size() || flags_line[end] == ' ' || flags_line[end] == '\n';
    if (start && stop) return true;
    pos = end;
  }
  return false;
}

std::string_view LineValue(std::string_view text, std::string_view key) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (!line.starts_with(key)) continue;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view v = line.substr(colon + 1);
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    return v;
  }
  return {};
}

uint64_t MeasureTscKhz() {
  timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC_RAW, &t0);
  uint64_t c0 = __rdtsc();
  timespec nap{0, 100'000'000};
  while (nanosleep(&nap, &nap) != 0) {
  }
  clock_gettime(CLOCK_MONOTONIC_RAW, &t1);
  uint64_t c1 = __rdtsc();
  int64_t ns = (t1.tv_sec - t0.tv_sec) * 1'000'000'000LL + (t1.tv_nsec - t0.tv_nsec);
  if (ns <= 0 || c1 <= c0) return 0;
  return static_cast<uint64_t>(static_cast<double>(c1 - c0) * 1e6 / static_cast<double>(ns));
}

}  // namespace

uint64_t TscKhzFromCpuinfo(std::string_view cpuinfo) {
  std::string_view flags = LineValue(cpuinfo, "flags");
  if (!HasFlag(flags, "constant_tsc") || !HasFlag(flags, "tsc_known_freq")) return 0;
  std::string_view mhz = LineValue(cpuinfo, "cpu MHz");
  double value = 0;
  auto [ptr, ec] = std::from_chars(mhz.data(), mhz.data() + mhz.size(), value);
  if (ec != std::errc() || value <= 0) return 0;
  return static_cast<uint64_t>(value * 1000.0 + 0.5);
}

uint64_t HostTscKhz() {
  static const uint64_t khz = [] {
    std::ifstream in("/proc/cpuinfo");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    if (uint64_t k = TscKhzFromCpuinfo(text)) return k;
    if (!HasFlag(LineValue(text, "flags"), "constant_tsc")) return uint64_t{0};
    return MeasureTscKhz();
  }();
  return khz;
}

}  // namespace metald::backend::common

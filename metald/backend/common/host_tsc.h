#pragma once
// The host TSC frequency, which a TCG guest needs on its kernel command line
// (tsc_early_khz=<kHz> tsc=reliable): under TCG the guest TSC counts at the host rate, and a
// microvm guest (no HPET, no ACPI PM timer) otherwise calibrates it against the PIT, which fails on
// a loaded host and hangs the boot (docs/guest-image.md).
//
// Thread-safety: safe from any thread; the first call measures, later calls return the cached
// value.

#include <cstdint>
#include <string_view>

namespace metald::backend::common {

// The host TSC frequency in kHz; 0 when unknown (no invariant TSC). Sources: /proc/cpuinfo's
// "cpu MHz" when the CPU flags include tsc_known_freq (exact on nested hosts), else a ~100 ms
// measurement of rdtsc against CLOCK_MONOTONIC_RAW. Cached after the first call.
uint64_t HostTscKhz();

// The "cpu MHz" value of /proc/cpuinfo text in kHz when its flags include both constant_tsc and
// tsc_known_freq; 0 otherwise. Exposed for tests.
uint64_t TscKhzFromCpuinfo(std::string_view cpuinfo);

}  // namespace metald::backend::common

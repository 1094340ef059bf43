#include <gtest/gtest.h>

#include "metald/backend/common/host_tsc.h"
#include "metald/backend/common/kvm_probe.h"

namespace metald::backend::common {
namespace {

TEST(HostTscTest, ReadsKnownFrequencyFromCpuinfo) {
  EXPECT_EQ(
      TscKhzFromCpuinfo("cpu MHz\t\t: 2095.989\nflags\t\t: fpu constant_tsc tsc_known_freq\n"),
      2095989u);
  // Without tsc_known_freq the cpuinfo value is only approximate: not used.
  EXPECT_EQ(TscKhzFromCpuinfo("cpu MHz\t\t: 2095.989\nflags\t\t: fpu constant_tsc\n"), 0u);
  EXPECT_EQ(TscKhzFromCpuinfo("cpu MHz\t\t: x\nflags\t\t: constant_tsc tsc_known_freq\n"), 0u);
  // A flag must match a whole word.
  EXPECT_EQ(TscKhzFromCpuinfo("cpu MHz : 1000\nflags : constant_tsc tsc_known_freqx\n"), 0u);
}

TEST(HostTscTest, HostValueIsPlausibleAndCached) {
  uint64_t khz = HostTscKhz();
  if (khz == 0) GTEST_SKIP() << "no invariant TSC on this host";
  EXPECT_GT(khz, 100'000u);     // > 100 MHz
  EXPECT_LT(khz, 10'000'000u);  // < 10 GHz
  EXPECT_EQ(HostTscKhz(), khz);
}

TEST(KvmProbeTest, MissingDeviceIsNotUsable) {
  KvmProbeResult r = ProbeKvm("/nonexistent/kvm");
  EXPECT_FALSE(r.usable);
  EXPECT_NE(r.reason.find("does not exist"), std::string::npos);
}

TEST(KvmProbeTest, NotAKvmDeviceIsNotUsable) {
  KvmProbeResult r = ProbeKvm("/dev/null");
  EXPECT_FALSE(r.usable);
  EXPECT_FALSE(r.reason.empty());
}

TEST(KvmProbeTest, HostProbeAnswers) {
  // Whatever the host offers, the probe answers (and does not hang).
  KvmProbeResult r = ProbeKvm();
  EXPECT_FALSE(r.reason.empty());
}

}  // namespace
}  // namespace metald::backend::common

#pragma once
// Does KVM really run guest code on this host? Opening /dev/kvm proves nothing: on nested hosts it
// can open, and even create a VM, yet guests never run. ProbeKvm creates a VM with one vCPU and
// runs a three-instruction real-mode payload (out 0x42 to port 0x10, hlt), checking both exits.
// The probe runs in a forked child that is killed after a timeout, so a KVM_RUN that never
// returns cannot hang the caller. Backends that can go further (QEMU: boot the real guest) do so on
// top of this check.
//
// Thread-safety: ProbeKvm is safe from any thread (it forks; the child makes only system calls).

#include <chrono>
#include <string>

namespace metald::backend::common {

struct KvmProbeResult {
  bool usable = false;
  std::string reason;  // Why not (or "KVM ran a test payload"), for logs.
};

// Probes `device` (default /dev/kvm). Never fails: every problem is a reason for usable=false.
KvmProbeResult ProbeKvm(const std::string& device = "/dev/kvm",
                        std::chrono::milliseconds timeout = std::chrono::milliseconds(10'000));

}  // namespace metald::backend::common

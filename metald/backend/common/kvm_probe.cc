#include "metald/backend/common/kvm_probe.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace metald::backend::common {
namespace {

// Exit codes of the probe child: 0 = usable, otherwise the failed step.
enum Step : int {
  kOk = 0,
  kOpen = 10,
  kApiVersion,
  kCreateVm,
  kMemory,
  kSetRegion,
  kCreateVcpu,
  kRunSize,
  kRunMap,
  kSregs,
  kRegs,
  kRun1,
  kExitIo,
  kRun2,
  kExitHlt,
};

const char* StepText(int step) {
  switch (step) {
    case kOpen:
      return "/dev/kvm cannot be opened read-write";
    case kApiVersion:
      return "KVM_GET_API_VERSION is not 12";
    case kCreateVm:
      return "KVM_CREATE_VM failed";
    case kMemory:
      return "cannot map guest memory";
    case kSetRegion:
      return "KVM_SET_USER_MEMORY_REGION failed";
    case kCreateVcpu:
      return "KVM_CREATE_VCPU failed";
    case kRunSize:
      return "KVM_GET_VCPU_MMAP_SIZE failed";
    case kRunMap:
      return "cannot map kvm_run";
    case kSregs:
      return "KVM_GET/SET_SREGS failed";
    case kRegs:
      return "KVM_SET_REGS failed";
    case kRun1:
      return "first KVM_RUN failed";
    case kExitIo:
      return "the payload's port write did not exit to the host";
    case kRun2:
      return "second KVM_RUN failed";
    case kExitHlt:
      return "the payload's hlt did not exit to the host";
    default:
      return "the probe failed";
  }
}

// In the forked child: system calls only.
int RunProbe(const char* device) {
  int kvm = ::open(device, O_RDWR | O_CLOEXEC);
  if (kvm < 0) return kOpen;
  if (::ioctl(kvm, KVM_GET_API_VERSION, 0) != 12) return kApiVersion;
  int vm = ::ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) return kCreateVm;
  void* mem = ::mmap(nullptr, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return kMemory;
  // mov al, 0x42; out 0x10, al; hlt
  static const unsigned char kCode[] = {0xb0, 0x42, 0xe6, 0x10, 0xf4};
  std::memcpy(mem, kCode, sizeof kCode);
  kvm_userspace_memory_region region{};
  region.slot = 0;
  region.guest_phys_addr = 0x1000;
  region.memory_size = 0x1000;
  region.userspace_addr = reinterpret_cast<uint64_t>(mem);
  if (::ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) return kSetRegion;
  int vcpu = ::ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) return kCreateVcpu;
  int run_size = ::ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size <= 0) return kRunSize;
  auto* run = static_cast<kvm_run*>(
      ::mmap(nullptr, static_cast<size_t>(run_size), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0));
  if (run == MAP_FAILED) return kRunMap;
  kvm_sregs sregs;
  if (::ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) return kSregs;
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  if (::ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) return kSregs;
  kvm_regs regs{};
  regs.rip = 0x1000;
  regs.rflags = 0x2;
  if (::ioctl(vcpu, KVM_SET_REGS, &regs) < 0) return kRegs;
  if (::ioctl(vcpu, KVM_RUN, 0) < 0) return kRun1;
  if (run->exit_reason != KVM_EXIT_IO || run->io.direction != KVM_EXIT_IO_OUT ||
      run->io.port != 0x10 || reinterpret_cast<unsigned char*>(run)[run->io.data_offset] != 0x42) {
    return kExitIo;
  }
  if (::ioctl(vcpu, KVM_RUN, 0) < 0) return kRun2;
  if (run->exit_reason != KVM_EXIT_HLT) return kExitHlt;
  return kOk;
}

}  // namespace

KvmProbeResult ProbeKvm(const std::string& device, std::chrono::milliseconds timeout) {
  if (::access(device.c_str(), F_OK) != 0) return {false, device + " does not exist"};
  pid_t pid = ::fork();
  if (pid < 0) return {false, std::string("fork: ") + std::strerror(errno)};
  if (pid == 0) ::_exit(RunProbe(device.c_str()));
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return {false, std::string("waitpid: ") + std::strerror(errno)};
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return {false, "KVM_RUN of a test payload did not finish in time"};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!WIFEXITED(status)) return {false, "the KVM probe crashed"};
  int code = WEXITSTATUS(status);
  if (code == kOk) return {true, "KVM ran a test payload"};
  return {false, StepText(code)};
}

}  // namespace metald::backend::common

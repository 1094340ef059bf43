#pragma once
// The QEMU backend: one qemu-system-x86_64 process per VM, machine type microvm, driven over QMP
// (qmp.h). KVM when it really runs guests on this host, TCG otherwise.
//
// Lifecycle mapping (QMP commands):
//   Create   spawn qemu with -S (vCPUs stopped), wait for the QMP socket, query-status must be
//            "prelaunch"
//   Boot     cont                      -> "running"
//   Pause    stop                      -> "paused"
//   Resume   cont                      -> "running"
//   Reboot   system_reset              (in place; same process)
//   Shutdown graceful: (cont if paused) system_powerdown, wait for the process to exit (the guest
//            powers off, QEMU exits 0), then quit, then SIGKILL; forced: quit, then SIGKILL
//   Delete   SIGKILL if alive, remove the VM directory
// QEMU runs without -no-reboot and without -no-shutdown: a guest reboot (or Ctrl-Alt-Del inside)
// resets the machine in place, and a guest power-off ends the process — the VM is then stopped.
//
// Thread-safety: see backend.h. Each VM has a mutex serialising its QMP connection (QEMU serves one
// QMP client at a time); Info and Metrics only try that mutex and fall back to cached values.

#include <sys/resource.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "metald/backend/backend.h"
#include "metald/process/jail.h"
#include "metald/process/process.h"

namespace metald::backend::qemu {

enum class Accel { kAuto, kKvm, kTcg };

struct QemuOptions {
  // qemu-system-x86_64 to run. Default: empty = looked up in PATH when the backend is made.
  std::string binary;
  // Accelerator. kAuto probes KVM (common/kvm_probe.h, plus a real guest boot when probe_kernel is
  // set) once, on first use, and falls back to TCG. Default: kAuto.
  Accel accel = Accel::kAuto;
  std::string kvm_device = "/dev/kvm";  // Default: /dev/kvm.
  // Optional guest used to prove KVM boots a real kernel (nested hosts can pass the ioctl probe
  // and still fail to boot Linux): KVM is used only if this guest prints probe_ready_line on its
  // serial console within probe_timeout. Default: empty (ioctl probe only).
  std::string probe_kernel;
  std::string probe_initrd;
  std::string probe_ready_line = "METALD-GUEST-READY";
  std::chrono::milliseconds probe_timeout{30'000};
  // Kernel arguments placed before the spec's. Default: "console=ttyS0".
  std::string base_kernel_args = "console=ttyS0";
  // Bound on waiting for QEMU's QMP socket after spawning, and on every QMP reply. Default: 60 s
  // (guards against hangs on a loaded host; a TCG start takes well under a second when idle).
  std::chrono::milliseconds start_timeout{60'000};
  std::chrono::milliseconds qmp_timeout{60'000};
  // How long to wait for the process after "quit", and after SIGKILL. Default: 10 s each.
  std::chrono::milliseconds quit_timeout{10'000};
  std::chrono::milliseconds kill_timeout{10'000};

  // Jails (CreateRequest::jail). A jailed QEMU is chrooted into <jail_base>/<vm_id>/root, which
  // holds hard links (or read-only bind mounts) of: the binary, its ELF interpreter and shared
  // libraries, the TCG accelerator module and its libraries (when not KVM), the microvm firmware
  // and option ROMs; the kernel, initrd and disks at /vm/...; the VM directory bind-mounted at
  // /run/vm (chowned to the VM, so QEMU creates its QMP socket and console log there and metald
  // finds them at their usual outside paths); /dev/null, /dev/urandom, /dev/net/tun (with network)
  // and /dev/kvm (with KVM). Directory holding the jails. Default: empty (a jailed Create fails).
  std::string jail_base;
  // Tests only: the JailOps the jail is built with (process/testing/fault_jail_ops.h fails one
  // step on purpose). Not owned; outlives the backend. Default: null = process::SystemJailOps().
  process::JailOps* jail_ops = nullptr;
  // QEMU's firmware directory, passed with -L (inside the jail at the same path). Default:
  // /usr/share/qemu.
  std::string firmware_dir = "/usr/share/qemu";
  // QEMU's module directory (accel-tcg-x86_64.so lives here on Debian). Default:
  // /usr/lib/x86_64-linux-gnu/qemu.
  std::string module_dir = "/usr/lib/x86_64-linux-gnu/qemu";
  // Resource limits of a jailed QEMU. Default: RLIMIT_NOFILE 4096, RLIMIT_CORE 0 (no core dumps
  // of guest memory).
  std::vector<process::JailRlimit> jail_rlimits = {{RLIMIT_NOFILE, 4096, 4096},
                                                   {RLIMIT_CORE, 0, 0}};
  // A jailed QEMU is the init of its own PID namespace. Default: true.
  bool jail_new_pid_namespace = true;
};

// Everything BuildQemuArgs needs; plain value.
struct QemuLaunch {
  std::string binary;
  std::string vm_id;
  bool kvm = false;
  uint64_t tsc_khz = 0;  // TCG only: passed as tsc_early_khz when non-zero.
  std::string base_kernel_args;
  model::VmSpec spec;
  std::string qmp_socket;
  std::string console_log;
  std::vector<std::string> tap_devices;  // One per spec.network entry.
  std::string firmware_dir;              // Non-empty: passed as -L (a jailed QEMU).
};

// The qemu-system-x86_64 argv for `launch` (argv[0] = binary). Pure. invalid_argument when a
// value cannot be expressed safely on QEMU's command line (a comma in a socket or console path; a
// TAP name count that does not match spec.network).
base::Result<std::vector<std::string>> BuildQemuArgs(const QemuLaunch& launch);

// Maps a QMP query-status "status" to the backend's VmState (backend.h VmInfo).
model::VmState StateFromQmpStatus(std::string_view status);

// Creates the backend. `spawner` must outlive it. Never fails: a missing binary is reported by
// HealthCheck (unavailable) and by Create.
std::unique_ptr<Backend> NewQemuBackend(QemuOptions options, process::ProcessSpawner* spawner);

// The accelerator for `options` and why. kAuto probes (blocking, up to probe_timeout); the backend
// calls this once and caches the answer. Exposed for the daemon's startup log and tests.
struct AccelChoice {
  bool kvm = false;
  std::string reason;
};
AccelChoice ChooseAccel(const QemuOptions& options, process::ProcessSpawner* spawner);

}  // namespace metald::backend::qemu

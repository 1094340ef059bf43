#pragma once
// Start here. metald/backend: the abstract Backend every VMM driver implements (the seed's
// CreateVM, BootVM, ShutdownVM, DeleteVM, PauseVM, ResumeVM, RebootVM, GetVMInfo, ListVMs,
// HealthCheck, GetMetrics, named in our style), plus Adopt for re-attaching after a restart.
// Implementations live in backend/qemu/ (and later firecracker/, cloudhypervisor/); the service
// gets one from backend/registry.h and never includes an implementation header.
//
// Concurrency model. Every call blocks (it talks to a VMM socket and waits on a process) and runs
// on the caller's thread — the service's handler pool. The service serialises the lifecycle calls
// for one VM (its per-VM actor); calls for different VMs may run concurrently. Metrics() and
// Info() may additionally run concurrently with a lifecycle call of the same VM (the billing
// sampler polls every 100 ms): they never wait for the lifecycle call to finish. Implementations
// keep a registry of the VMs they drive (filled by Create and Adopt, emptied by Delete) under
// their own mutex.
//
// Ownership. The service owns the VM directory's location and passes it in; the backend owns its
// contents (VMM sockets, console log, VMM log) and removes them all on Delete. Paths in the spec
// are already resolved under the image roots (model/path_policy.h). TAP devices are created by the
// service (net/) and passed by name, one per spec.network entry.
//
// Errors: invalid_argument (a spec the VMM cannot run), not_found (unknown VM id),
// failed_precondition (wrong VMM state, e.g. Boot of a VM whose process exited), unavailable (the
// VMM or its socket went away), deadline_exceeded, internal. Messages start with the operation
// ("Boot vm-...: ").

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "metald/base/status.h"
#include "metald/model/backend_kind.h"
#include "metald/model/usage_sample.h"
#include "metald/model/vm_spec.h"
#include "metald/model/vm_state.h"
#include "metald/process/process.h"

namespace metald::backend {

// What the service stores (in SQLite) to find a VM's VMM again, e.g. after a daemon restart.
// Plain value.
struct VmHandle {
  std::string vm_id;
  model::BackendKind kind = model::BackendKind::kQemu;
  process::ProcessId process;  // The VMM process.
  std::string vm_dir;          // The per-VM directory (absolute).
  std::string api_socket;      // The VMM control socket (QMP / REST), absolute, under vm_dir.
  std::string console_log;     // Where the guest's serial console is written.
  std::vector<std::string> tap_devices;  // Host TAP names, one per spec.network entry.
  friend bool operator==(const VmHandle&, const VmHandle&) = default;
};

// How the VMM of one VM is jailed (process/jail.h, process/jail_spec.h); chosen by the service.
// Plain value.
struct VmJail {
  // Non-zero identity the VMM runs as, from a process::UidAllocator. TAP devices must be owned by
  // it (net::VmNetworkRequest tap_owner_uid/gid), and writable disks writable by it.
  uid_t uid = 0;
  gid_t gid = 0;
  // Files the VMM process writes itself into before exec (process::VmCgroup::procs_files).
  std::vector<std::string> cgroup_procs_files;
};

struct CreateRequest {
  std::string vm_id;
  model::VmSpec spec;  // Validated (model::ValidateSpec) with resolved paths.
  // Absolute path of a directory for this VM's files; created if missing, owned by the backend
  // from now on. Unix socket paths inside it must fit 107 bytes.
  std::string vm_dir;
  // TAP device names, one per spec.network entry, same order; already created and up.
  std::vector<std::string> tap_devices;
  // Non-empty: the VMM process runs inside this network namespace ("/run/netns/<name>", from
  // net::VmNetwork::netns_path), where the TAP devices are. Empty: the host's namespace.
  std::string netns_path;
  // Set: the VMM runs jailed (chroot with only what this VM needs, this uid/gid, no capabilities,
  // its cgroups). The backend builds the jail in Create and removes it in Delete; handle paths
  // (api_socket, console_log) stay the outside ones. Unset: the VMM runs as metald's user.
  std::optional<VmJail> jail;
};

struct ShutdownRequest {
  // true: ask the guest (ACPI power button / Ctrl-Alt-Del) and wait up to `timeout` for it to
  // power off, then force. false: stop the VMM at once.
  bool graceful = true;
  std::chrono::milliseconds timeout{30'000};
};

struct ShutdownResult {
  // True when the guest powered itself off within the timeout; false when the VMM was forced.
  bool graceful = false;
  process::ExitInfo exit;  // How the VMM process ended.
};

struct VmInfo {
  // The backend's view of the VM: kCreated (VMM up, guest not started), kRunning, kPaused,
  // kStopped (process exited cleanly, or the guest powered off), kFailed (the process crashed or
  // vanished, or the VMM reports an internal error / guest panic).
  model::VmState state = model::VmState::kCreated;
  bool process_alive = false;
  std::optional<process::ExitInfo> exit;  // Set once the process is gone.
  std::string vmm_status;                 // The VMM's own word ("running", "prelaunch", ...).
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual model::BackendKind kind() const = 0;

  // Starts the VMM process for `request` with the guest not yet running, waits until its API
  // answers, and returns the handle to store. On error nothing is left running (files may remain
  // in vm_dir until Delete). already_exists when the VM id is registered with a live process; a
  // registered VM whose process has exited (e.g. after Shutdown) is replaced, which is how a
  // stopped VM is started again (Create, then Boot).
  virtual base::Result<VmHandle> Create(const CreateRequest& request) = 0;

  // Starts the guest. REQUIRES: the VM is registered and its VMM is in the created state.
  virtual base::Status Boot(std::string_view vm_id) = 0;

  // Stops the guest (see ShutdownRequest). The VMM process is gone when this returns OK; the VM
  // stays registered (Info reports kStopped) until Delete. A VM whose process already exited
  // returns OK with graceful = false and its exit info.
  virtual base::Result<ShutdownResult> Shutdown(std::string_view vm_id,
                                                const ShutdownRequest& request) = 0;

  // Kills the VMM if it is alive, removes every file of the VM directory and the directory, and
  // forgets the VM. not_found when the VM is not registered.
  virtual base::Status Delete(std::string_view vm_id) = 0;

  // Freezes / thaws the guest's vCPUs. REQUIRES: running / paused respectively.
  virtual base::Status Pause(std::string_view vm_id) = 0;
  virtual base::Status Resume(std::string_view vm_id) = 0;

  // Restarts the guest in place (same VMM process, same handle). REQUIRES: running.
  virtual base::Status Reboot(std::string_view vm_id) = 0;

  // The VM's current state as the VMM sees it. Does not wait for a lifecycle call in progress.
  virtual base::Result<VmInfo> Info(std::string_view vm_id) = 0;

  // Ids of the registered VMs, sorted.
  virtual std::vector<std::string> List() = 0;

  // Usage counters of the VM's current incarnation: timestamp_unix_ns, cpu_time_ns, memory_bytes
  // and, where the VMM reports them, net and disk bytes. vm_id is set; customer_id, incarnation
  // and sequence are the caller's to fill. not_found / unavailable when the process is gone.
  // Cheap (no waiting on a lifecycle call); meant to be polled every 100 ms.
  virtual base::Result<model::UsageSample> Metrics(std::string_view vm_id) = 0;

  // OK when this backend can start VMs on this host (binary present, accelerator chosen);
  // unavailable with the reason otherwise.
  virtual base::Status HealthCheck() = 0;

  // Registers a VM created by an earlier metald from its stored handle and reconnects to its VMM
  // API. The process identity is checked (pid + start time). If the process is gone the VM is
  // still registered, so Info reports it (kFailed, exit unknown) and Delete cleans up; the
  // returned handle is the stored one. already_exists when the id is registered already.
  virtual base::Result<VmHandle> Adopt(const VmHandle& stored) = 0;
};

}  // namespace metald::backend

#pragma once
// Start here. metald/service: the VM service (style.md layer 4). `VmService` is the pure interface
// api/ (Connect, gRPC), tests and anything else call; `StartVmService` builds the real one from a
// repository (store/), a backend (backend/) and optionally a host network (net/).
//
// Behaviour every implementation keeps:
//   * Ownership. Every call names a Caller; a VM of another customer is not_found "VM <id> not
//     found", indistinguishable from a missing one (the store filters by customer in SQL).
//   * State machine. Exactly model/vm_state.h. An operation in a state that does not allow it is
//     failed_precondition naming the current state ("Cannot pause VM in state STOPPED"). Every
//     transition is stored with its reason.
//   * Serialisation. Lifecycle calls on one VM run one at a time (a per-VM lock, waited for up to
//     the caller's deadline); calls on different VMs run in parallel. Reads (GetVmInfo, ListVms,
//     WaitVm, WatchVmEvents) never wait for a lifecycle call.
//   * Errors carry the operation and VM: "BootVm vm-…: <backend message>". internal errors may
//     carry details meant for the log; api/ replaces their message before it reaches a client.
//
// The real service also watches the VMM processes (a monitor thread): a guest that powers itself
// off moves RUNNING → STOPPED (guest_shutdown), a VMM that dies moves the VM to FAILED (crash). On
// start it recovers what an earlier metald left: VMs with a live VMM are re-adopted, VMs whose
// VMM is gone and VMs caught in a transient state are reconciled (reason recovered), a VM caught
// in DELETING is deleted.
//
// Thread-safety: every method may be called concurrently from any thread.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "metald/backend/backend.h"
#include "metald/base/status.h"
#include "metald/model/vm_spec.h"
#include "metald/net/network.h"
#include "metald/observe/log.h"
#include "metald/process/cgroup.h"
#include "metald/process/jail.h"
#include "metald/service/requests.h"
#include "metald/store/repository.h"

namespace metald::service {

class VmService {
 public:
  virtual ~VmService() = default;

  virtual base::Result<CreateVmResponse> CreateVm(const Caller& caller,
                                                  const CreateVmRequest& request) = 0;
  virtual base::Result<VmStateResponse> BootVm(const Caller& caller,
                                               const BootVmRequest& request) = 0;
  virtual base::Result<VmStateResponse> PauseVm(const Caller& caller,
                                                const PauseVmRequest& request) = 0;
  virtual base::Result<VmStateResponse> ResumeVm(const Caller& caller,
                                                 const ResumeVmRequest& request) = 0;
  virtual base::Result<VmStateResponse> RebootVm(const Caller& caller,
                                                 const RebootVmRequest& request) = 0;
  virtual base::Result<ShutdownVmResponse> ShutdownVm(const Caller& caller,
                                                      const ShutdownVmRequest& request) = 0;
  virtual base::Status DeleteVm(const Caller& caller, const DeleteVmRequest& request) = 0;
  virtual base::Result<Vm> GetVmInfo(const Caller& caller, const GetVmInfoRequest& request) = 0;
  virtual base::Result<ListVmsResponse> ListVms(const Caller& caller,
                                                const ListVmsRequest& request) = 0;
  // Calls `sink` for each event, in order, from the calling thread. See requests.h.
  virtual base::Status WatchVmEvents(const Caller& caller, const WatchVmEventsRequest& request,
                                     const std::function<bool(const VmEvent&)>& sink) = 0;
  virtual base::Result<Vm> WaitVm(const Caller& caller, const WaitVmRequest& request) = 0;

  // OK once start-up recovery is done and the backend reports healthy; unavailable with the
  // reason otherwise (GET /readyz).
  virtual base::Status Ready() = 0;
};

struct ServiceOptions {
  // Directory holding one sub-directory per VM ("<vm_root>/<vm id>"), created if missing.
  // Required; absolute. Keep it short: VMM unix sockets live inside (108-byte limit).
  std::string vm_root;
  // The only directories kernel, initrd and disk paths may resolve into
  // (model::ResolveExistingUnderRoots). Required, non-empty, absolute.
  std::vector<std::string> image_roots;
  // Bounds on a VM's spec. Default: model::SpecLimits{}.
  model::SpecLimits limits;
  // Most VMs one customer may have at once; CreateVm beyond it is resource_exhausted.
  // 0 = unlimited. Default: 0.
  int max_vms_per_customer = 0;
  // How often the monitor thread checks VMM processes. Default: 500 ms.
  std::chrono::milliseconds monitor_interval{500};
  // How often WaitVm / WatchVmEvents re-read the store when nothing woke them. Default: 200 ms.
  std::chrono::milliseconds poll_interval{200};
  // Default: a logger on stderr.
  observe::Logger logger;
  // Nanoseconds since the Unix epoch. Default: system_clock.
  std::function<int64_t()> now_unix_ns;

  // Jailing (docs/jail.md "The service"). true: every VMM runs jailed (backend::VmJail): its own
  // uid/gid from ServiceDeps::uids (held from CreateVm to DeleteVm; the TAP is owned by it), in
  // its own cgroup from ServiceDeps::cgroups (made before each VMM start, removed once the VMM is
  // gone). Requires both deps (invalid_argument otherwise). Default: false (the VMM runs as
  // metald's user, no cgroup).
  bool jail = false;
  // Added to spec.memory.size_bytes for the cgroup's memory limit: QEMU's own code, page tables,
  // device buffers. Default: 64 MiB.
  uint64_t jail_memory_overhead_bytes = 64ull << 20;
  // The only directory (absolute) a jailed VM's writable disk may resolve into. Such a disk is
  // chowned to the VM's uid at CreateVm (refused with failed_precondition when another VM's uid
  // owns it) and chowned back to root at DeleteVm. Empty: a jailed VM may only have read-only
  // disks (invalid_argument otherwise); metald never chowns a shared image. Default: empty.
  std::string jail_writable_disk_dir;
};

struct ServiceDeps {
  store::VmRepository* repository = nullptr;  // Required; not owned; outlives the service.
  backend::Backend* backend = nullptr;        // Required; not owned; outlives the service.
  // Host networking for VMs whose spec has network interfaces; nullptr = networking disabled
  // (such a CreateVm is invalid_argument "network: networking is disabled on this daemon").
  // Not owned; outlives the service.
  net::Network* network = nullptr;
  // Required when ServiceOptions::jail; ignored otherwise. Not owned; outlive the service.
  process::CgroupManager* cgroups = nullptr;
  process::UidAllocator* uids = nullptr;
};

// Validates the options, runs start-up recovery and starts the monitor thread. Errors:
// invalid_argument naming the option; what the store or backend returned during recovery (a
// single VM that cannot be recovered is moved to FAILED and logged, not an error). Destroying the
// service stops the monitor thread and leaves every VMM running (a later metald re-adopts them).
base::Result<std::unique_ptr<VmService>> StartVmService(ServiceDeps deps, ServiceOptions options);

}  // namespace metald::service

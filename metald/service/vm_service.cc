// The real VmService (vm_service.h). Structure:
//   * Every lifecycle call takes the VM's lock (internal/vm_locks.h) for its whole duration, then
//     re-reads the record, checks the operation against model/vm_state.h, stores the transient
//     state, calls the backend and stores the final state (FAILED with backend_error when the
//     backend failed). The store's compare-and-set UpdateState is the second line of defence.
//   * Reads never take a VM lock: they read the store (a WAL snapshot) and the network's leases.
//   * Every transition this service stores bumps events_gen_ and wakes WaitVm / WatchVmEvents;
//     they also re-read the store every poll_interval (transitions made by another process).
//   * A monitor thread checks VMM processes every monitor_interval, taking only free VM locks.
//   * Start-up recovery runs in StartVmService before the service is handed out (no concurrency).
#include "metald/service/vm_service.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <system_error>
#include <thread>
#include <utility>

#include "metald/base/check.h"
#include "metald/model/path_policy.h"
#include "metald/model/vm_id.h"
#include "metald/model/vm_state.h"
#include "metald/process/process.h"
#include "metald/service/internal/vm_locks.h"

namespace metald::service {
namespace {

namespace fs = std::filesystem;
using model::TransitionReason;
using model::VmOp;
using model::VmState;
using SteadyClock = std::chrono::steady_clock;

constexpr int kDefaultPageSize = 100;
constexpr int kMaxPageSize = 1000;
constexpr size_t kMaxIdempotencyKeyBytes = 128;
constexpr std::chrono::milliseconds kMaxTimeout = std::chrono::minutes(10);
constexpr int kEventBatch = 1000;
constexpr std::string_view kDefaultConsoleLog = "console.log";

int64_t SystemNowUnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// What a customer may see of a transition's stored detail. Backend errors can carry host paths
// and VMM internals: those stay in the transition log and the daemon log.
std::string CustomerMessage(TransitionReason reason, const std::string& detail) {
  if (reason == TransitionReason::kBackendError && !detail.empty()) {
    return "The VMM failed the operation";
  }
  return detail;
}

// The shortest path of allowed transitions from `from` to `to`, not passing through DELETING or
// DELETED (excluding `from`, including `to`); nullopt when there is none. Empty when from == to.
std::optional<std::vector<VmState>> PathTo(VmState from, VmState to) {
  if (from == to) return std::vector<VmState>{};
  std::map<VmState, VmState> parent;
  std::deque<VmState> queue{from};
  parent[from] = from;
  while (!queue.empty()) {
    VmState s = queue.front();
    queue.pop_front();
    for (VmState next : model::kAllVmStates) {
      if (next == VmState::kDeleting || next == VmState::kDeleted) continue;
      if (parent.count(next) || !model::CheckTransition(s, next).ok()) continue;
      parent[next] = s;
      if (next == to) {
        std::vector<VmState> path;
        for (VmState at = to; at != from; at = parent[at]) path.push_back(at);
        std::reverse(path.begin(), path.end());
        return path;
      }
      queue.push_back(next);
    }
  }
  return std::nullopt;
}

bool IsAbsolute(const std::string& p) { return !p.empty() && p[0] == '/'; }

class VmServiceImpl final : public VmService {
 public:
  VmServiceImpl(ServiceDeps deps, ServiceOptions options)
      : repo_(deps.repository),
        backend_(deps.backend),
        network_(deps.network),
        cgroups_(deps.cgroups),
        uids_(deps.uids),
        options_(std::move(options)),
        logger_(options_.logger.With({{"component", "service"}})),
        ids_(model::VmIdGenerator::Options{
            [now = options_.now_unix_ns] { return now() / 1'000'000; }, nullptr}) {}

  ~VmServiceImpl() override {
    {
      std::lock_guard<std::mutex> lock(monitor_mu_);
      stopping_ = true;
    }
    monitor_cv_.notify_all();
    if (monitor_.joinable()) monitor_.join();
  }

  // Recovery, then the monitor thread. Called once, before the service is shared.
  base::Status Start() {
    RETURN_IF_ERROR(Recover());
    recovered_ = true;
    monitor_ = std::thread([this] { MonitorLoop(); });
    return base::OkStatus();
  }

  base::Result<CreateVmResponse> CreateVm(const Caller& caller,
                                          const CreateVmRequest& request) override;
  base::Result<VmStateResponse> BootVm(const Caller& caller, const BootVmRequest& request) override;
  base::Result<VmStateResponse> PauseVm(const Caller& caller,
                                        const PauseVmRequest& request) override {
    return SimpleOp(caller, request.vm_id, VmOp::kPause, "PauseVm", VmState::kPaused,
                    [this](const std::string& id) { return backend_->Pause(id); });
  }
  base::Result<VmStateResponse> ResumeVm(const Caller& caller,
                                         const ResumeVmRequest& request) override {
    return SimpleOp(caller, request.vm_id, VmOp::kResume, "ResumeVm", VmState::kRunning,
                    [this](const std::string& id) { return backend_->Resume(id); });
  }
  base::Result<VmStateResponse> RebootVm(const Caller& caller,
                                         const RebootVmRequest& request) override {
    return SimpleOp(caller, request.vm_id, VmOp::kReboot, "RebootVm", VmState::kRunning,
                    [this](const std::string& id) { return backend_->Reboot(id); });
  }
  base::Result<ShutdownVmResponse> ShutdownVm(const Caller& caller,
                                              const ShutdownVmRequest& request) override;
  base::Status DeleteVm(const Caller& caller, const DeleteVmRequest& request) override;
  base::Result<Vm> GetVmInfo(const Caller& caller, const GetVmInfoRequest& request) override;
  base::Result<ListVmsResponse> ListVms(const Caller& caller,
                                        const ListVmsRequest& request) override;
  base::Status WatchVmEvents(const Caller& caller, const WatchVmEventsRequest& request,
                             const std::function<bool(const VmEvent&)>& sink) override;
  base::Result<Vm> WaitVm(const Caller& caller, const WaitVmRequest& request) override;

  base::Status Ready() override {
    if (!recovered_) return base::UnavailableError("Start-up recovery has not finished");
    base::Status health = backend_->HealthCheck();
    if (!health.ok()) return base::UnavailableError("Backend unhealthy: " + health.message());
    return base::OkStatus();
  }

 private:
  // A VM whose lock this call holds, and its record as read under the lock.
  struct LockedVm {
    internal::VmLocks::Guard guard;
    store::VmRecord rec;
  };

  static std::string Ctx(std::string_view rpc, const std::string& vm_id) {
    return std::string(rpc) + " " + vm_id;
  }

  std::string VmDir(const std::string& vm_id) const { return options_.vm_root + "/" + vm_id; }

  static base::Status CheckCaller(const Caller& caller) {
    if (caller.customer_id.empty()) return base::InvalidArgumentError("Caller has no customer id");
    return base::OkStatus();
  }

  // Ownership check, then the VM's lock (waited for up to the caller's deadline), then the record
  // re-read under the lock. Errors: invalid_argument, not_found, deadline_exceeded "VM <id> is
  // busy", cancelled.
  base::Result<LockedVm> LockVm(const Caller& caller, const std::string& vm_id) {
    RETURN_IF_ERROR(CheckCaller(caller));
    if (vm_id.empty()) return base::InvalidArgumentError("vm_id is required");
    // Check ownership first: another customer must not learn that the VM is busy.
    RETURN_IF_ERROR(repo_->Get(caller.customer_id, vm_id).status());
    ASSIGN_OR_RETURN(internal::VmLocks::Guard guard,
                     locks_.Acquire(vm_id, caller.deadline, caller.cancelled));
    ASSIGN_OR_RETURN(store::VmRecord rec, repo_->Get(caller.customer_id, vm_id));
    return LockedVm{std::move(guard), std::move(rec)};
  }

  // Stores rec.state -> `to` (compare-and-set), logs it and wakes waiters. Updates `rec`.
  // REQUIRES: the VM's lock is held (or recovery is running).
  base::Status Move(store::VmRecord& rec, VmState to, TransitionReason reason,
                    const std::string& detail = "") {
    VmState from = rec.state;
    base::Result<store::VmRecord> updated = repo_->UpdateState(rec.id, from, to, reason, detail);
    if (!updated.ok()) return updated.status();
    rec = std::move(updated).value();
    LogTransition(rec.id, rec.customer_id, from, to, reason, detail);
    Notify();
    return base::OkStatus();
  }

  void LogTransition(const std::string& id, const std::string& customer,
                     std::optional<VmState> from, VmState to, TransitionReason reason,
                     const std::string& detail) {
    logger_.Info("VM state changed",
                 {{"vm_id", id},
                  {"customer_id", customer},
                  {"from", from ? model::StateName(*from) : std::string_view("NONE")},
                  {"to", model::StateName(to)},
                  {"reason", model::ReasonName(reason)},
                  {"detail", detail}});
  }

  void Notify() {
    {
      std::lock_guard<std::mutex> lock(events_mu_);
      ++events_gen_;
    }
    events_cv_.notify_all();
  }

  // Moves the VM to FAILED with backend_error after `cause` (logged), and returns `cause` with
  // the call's context. A failure to store FAILED is logged; `cause` is still what is returned.
  base::Status Fail(store::VmRecord& rec, std::string_view rpc, const base::Status& cause) {
    base::Status with_ctx = cause.WithContext(Ctx(rpc, rec.id));
    if (model::CheckTransition(rec.state, VmState::kFailed).ok()) {
      base::Status st =
          Move(rec, VmState::kFailed, TransitionReason::kBackendError, with_ctx.message());
      if (!st.ok()) {
        logger_.Error("Could not store FAILED", {{"vm_id", rec.id}, {"error", st}});
      }
    }
    return with_ctx;
  }

  // Kernel, initrd and drive paths resolved under the image roots; the console log placed in the
  // VM directory. Errors: invalid_argument naming the field.
  base::Result<model::VmSpec> ResolveSpec(const model::VmSpec& spec, const std::string& vm_dir) {
    model::VmSpec out = spec;
    ASSIGN_OR_RETURN(out.boot.kernel_path,
                     model::ResolveExistingUnderRoots(spec.boot.kernel_path, options_.image_roots,
                                                      "boot.kernel_path"));
    if (!spec.boot.initrd_path.empty()) {
      ASSIGN_OR_RETURN(out.boot.initrd_path,
                       model::ResolveExistingUnderRoots(spec.boot.initrd_path, options_.image_roots,
                                                        "boot.initrd_path"));
    }
    for (size_t i = 0; i < spec.storage.size(); ++i) {
      std::string field = "storage[" + std::to_string(i) + "].path";
      ASSIGN_OR_RETURN(out.storage[i].path, model::ResolveExistingUnderRoots(
                                                spec.storage[i].path, options_.image_roots, field));
    }
    RETURN_IF_ERROR(CheckConsoleLog(spec));
    out.console.log_file = ConsoleLog(spec, vm_dir);
    return out;
  }

  static base::Status CheckConsoleLog(const model::VmSpec& spec) {
    const std::string& f = spec.console.log_file;
    if (f.empty()) return base::OkStatus();
    if (f.find('/') != std::string::npos || f == "." || f == "..") {
      return base::InvalidArgumentError(
          "console.log_file must be a file name inside the VM directory (no '/')");
    }
    return base::OkStatus();
  }

  // Where the console log of a VM is: deterministic from vm_root, id and the stored spec, so
  // recovery can rebuild the backend handle.
  static std::string ConsoleLog(const model::VmSpec& spec, const std::string& vm_dir) {
    return vm_dir + "/" +
           (spec.console.log_file.empty() ? std::string(kDefaultConsoleLog)
                                          : spec.console.log_file);
  }

  // What CreateVm accepts in spec.network: net/ supports one interface and assigns address and
  // MAC itself.
  base::Status CheckNetworkRequest(const model::VmSpec& spec) {
    if (spec.network.empty()) return base::OkStatus();
    if (network_ == nullptr) {
      return base::InvalidArgumentError("network: networking is disabled on this daemon");
    }
    if (spec.network.size() > 1) {
      return base::InvalidArgumentError("network: at most 1 interface is supported");
    }
    const model::NetworkSpec& n = spec.network[0];
    auto assigned = [](std::string_view field) {
      return base::InvalidArgumentError(
          "network[0]." + std::string(field) +
          " must be empty: the daemon assigns the interface's addresses");
    };
    if (!n.ipv4_address.empty()) return assigned("ipv4_address");
    if (!n.ipv6_address.empty()) return assigned("ipv6_address");
    if (!n.gateway.empty()) return assigned("gateway");
    if (!n.mac_address.empty()) return assigned("mac_address");
    return base::OkStatus();
  }

  // The backend's CreateRequest: resolved spec, the network's MAC, TAP, namespace and kernel
  // command line fragment (never stored in the customer's spec).
  static backend::CreateRequest MakeCreateRequest(const std::string& vm_id, model::VmSpec resolved,
                                                  std::string vm_dir, const net::VmNetwork* vnet) {
    backend::CreateRequest req;
    req.vm_id = vm_id;
    req.vm_dir = std::move(vm_dir);
    if (vnet != nullptr && !resolved.network.empty()) {
      resolved.network[0].mac_address = vnet->mac;
      std::string fragment = vnet->KernelCmdlineFragment();
      resolved.boot.kernel_args =
          resolved.boot.kernel_args.empty() ? fragment : resolved.boot.kernel_args + " " + fragment;
      req.tap_devices = {vnet->tap_name};
      req.netns_path = vnet->netns_path;
    }
    req.spec = std::move(resolved);
    return req;
  }

  // A new VMM for a STOPPED VM: paths are resolved again (the images may have changed) and the
  // network looked up from its lease.
  base::Result<backend::CreateRequest> CreateRequestFor(const store::VmRecord& rec) {
    std::string vm_dir = VmDir(rec.id);
    ASSIGN_OR_RETURN(model::VmSpec resolved, ResolveSpec(rec.spec, vm_dir));
    std::optional<net::VmNetwork> vnet;
    if (!rec.spec.network.empty()) {
      if (network_ == nullptr) {
        return base::FailedPreconditionError("The VM has a network but networking is disabled");
      }
      ASSIGN_OR_RETURN(vnet, network_->Lookup(rec.id));
    }
    return MakeCreateRequest(rec.id, std::move(resolved), vm_dir, vnet ? &*vnet : nullptr);
  }

  // --- Jail (options_.jail) ---
  //
  // Per VM: a uid (= gid) held from CreateVm to the end of DeleteVm — the TAP device and the VM
  // directory are owned by it, so it must not change while the VM exists; a cgroup that exists
  // exactly while a VMM process may (made before each backend Create, removed once the VMM is
  // gone: Shutdown, a VMM the monitor finds gone, Delete, every failure path).

  // invalid_argument when a writable disk of a jailed VM resolves outside jail_writable_disk_dir.
  base::Status CheckWritableDisks(const model::VmSpec& resolved) const {
    if (!options_.jail) return base::OkStatus();
    for (size_t i = 0; i < resolved.storage.size(); ++i) {
      const model::StorageSpec& d = resolved.storage[i];
      if (d.read_only) continue;
      const std::string& dir = options_.jail_writable_disk_dir;
      if (dir.empty() || d.path.rfind(dir + "/", 0) != 0) {
        return base::InvalidArgumentError(
            "storage[" + std::to_string(i) +
            "]: a writable disk must be inside the daemon's writable disk directory (or set "
            "read_only)");
      }
    }
    return base::OkStatus();
  }

  // Makes each writable disk owned by `uid` (a jailed VMM can only write what its uid may).
  // failed_precondition when another non-root uid owns one: another VM may be using it.
  base::Status ChownWritableDisks(const model::VmSpec& resolved, uid_t uid) {
    for (size_t i = 0; i < resolved.storage.size(); ++i) {
      const model::StorageSpec& d = resolved.storage[i];
      if (d.read_only) continue;
      struct stat st {};
      if (::stat(d.path.c_str(), &st) != 0) {
        return base::InternalError("storage[" + std::to_string(i) +
                                   "]: stat: " + std::strerror(errno));
      }
      if (st.st_uid == uid) continue;
      if (st.st_uid != 0) {
        return base::FailedPreconditionError(
            "storage[" + std::to_string(i) +
            "]: the disk is owned by another user (another VM may be using it)");
      }
      if (::chown(d.path.c_str(), uid, uid) != 0) {
        return base::InternalError("storage[" + std::to_string(i) +
                                   "]: chown: " + std::strerror(errno));
      }
    }
    return base::OkStatus();
  }

  // Gives the VM's writable disks back to root (only those its uid still owns). Best effort: a
  // disk that is gone or no longer resolves is skipped; failures are logged.
  void UnchownWritableDisks(const store::VmRecord& rec) {
    if (!options_.jail) return;
    std::optional<uid_t> uid = uids_->Find(rec.id);
    if (!uid) return;
    for (size_t i = 0; i < rec.spec.storage.size(); ++i) {
      const model::StorageSpec& d = rec.spec.storage[i];
      if (d.read_only) continue;
      base::Result<std::string> path =
          model::ResolveExistingUnderRoots(d.path, options_.image_roots, "storage");
      if (!path.ok()) continue;
      struct stat st {};
      if (::stat(path->c_str(), &st) != 0 || st.st_uid != *uid) continue;
      if (::chown(path->c_str(), 0, 0) != 0) {
        logger_.Warn("Cannot give a writable disk back to root",
                     {{"vm_id", rec.id}, {"path", *path}, {"error", std::strerror(errno)}});
      }
    }
  }

  // Makes the VM's cgroup (a stale one of an earlier VMM, whose process is gone, is removed
  // first) and returns the jail for the backend. REQUIRES: options_.jail, the VM holds a uid.
  base::Result<backend::VmJail> StartJail(const store::VmRecord& rec) {
    std::optional<uid_t> uid = uids_->Find(rec.id);
    if (!uid) return base::InternalError("jail: the VM holds no uid");
    RETURN_IF_ERROR(cgroups_->Remove(rec.customer_id, rec.id).WithContext("cgroup"));
    process::CgroupLimits limits;
    limits.memory_bytes = rec.spec.memory.size_bytes + options_.jail_memory_overhead_bytes;
    limits.vcpus = rec.spec.cpu.vcpu_count;
    base::Result<process::VmCgroup> cg = cgroups_->Create(rec.customer_id, rec.id, limits);
    if (!cg.ok()) return cg.status().WithContext("cgroup");
    backend::VmJail j;
    j.uid = *uid;
    j.gid = static_cast<gid_t>(*uid);
    j.cgroup_procs_files = cg->procs_files;
    return j;
  }

  // Removes the VM's cgroup once its VMM is gone; errors are logged (the next StartJail or the
  // delete removes it again).
  void StopCgroup(const store::VmRecord& rec) {
    if (!options_.jail) return;
    base::Status st = cgroups_->Remove(rec.customer_id, rec.id);
    if (!st.ok()) logger_.Warn("Cannot remove VM cgroup", {{"vm_id", rec.id}, {"error", st}});
  }

  static store::ProcessInfo ToProcessInfo(const backend::VmHandle& h) {
    store::ProcessInfo p;
    p.pid = h.process.pid;
    p.start_time = static_cast<int64_t>(h.process.start_time);
    p.api_socket = h.api_socket;
    return p;
  }

  // The handle a backend needs to re-adopt the VM, rebuilt from the record: vm_dir and console
  // log are derived from vm_root, id and spec; the API socket is stored; the TAP from the lease.
  backend::VmHandle HandleFromRecord(const store::VmRecord& rec) {
    backend::VmHandle h;
    h.vm_id = rec.id;
    h.kind = rec.backend;
    h.process.pid = static_cast<pid_t>(rec.process.pid);
    h.process.start_time = static_cast<uint64_t>(rec.process.start_time);
    h.vm_dir = VmDir(rec.id);
    h.api_socket = rec.process.api_socket;
    h.console_log = ConsoleLog(rec.spec, h.vm_dir);
    if (network_ != nullptr && !rec.spec.network.empty()) {
      base::Result<net::VmNetwork> vnet = network_->Lookup(rec.id);
      if (vnet.ok()) h.tap_devices = {vnet->tap_name};
    }
    return h;
  }

  // Removes a record in CREATING or FAILED (through FAILED and DELETING) so that nothing of the
  // VM remains in the vms table. Errors are logged.
  void RemoveRecord(store::VmRecord& rec, TransitionReason reason, const std::string& detail) {
    base::Status st;
    if (rec.state != VmState::kFailed && rec.state != VmState::kDeleting) {
      st = Move(rec, VmState::kFailed, reason, detail);
    }
    if (st.ok() && rec.state != VmState::kDeleting) st = Move(rec, VmState::kDeleting, reason);
    if (st.ok()) st = repo_->Delete(rec.id, reason);
    if (st.ok()) {
      LogTransition(rec.id, rec.customer_id, VmState::kDeleting, VmState::kDeleted, reason, "");
      Notify();
    } else {
      logger_.Error("Could not remove VM record", {{"vm_id", rec.id}, {"error", st}});
    }
  }

  // Undoes a CreateVm after the record was stored, in reverse order. Errors are logged: the
  // caller returns the original failure.
  void UndoCreate(store::VmRecord& rec, bool backend_called, bool network_set_up,
                  TransitionReason reason, const std::string& detail) {
    if (backend_called) {
      base::Status st = backend_->Delete(rec.id);
      if (!st.ok() && st.code() != base::StatusCode::kNotFound) {
        logger_.Error("CreateVm undo: backend Delete failed", {{"vm_id", rec.id}, {"error", st}});
      }
    }
    // Idempotent, so run whether or not the cgroup was made.
    StopCgroup(rec);
    if (network_set_up && network_ != nullptr) {
      base::Status st = network_->Teardown(rec.id);
      if (!st.ok()) {
        logger_.Error("CreateVm undo: network Teardown failed", {{"vm_id", rec.id}, {"error", st}});
      }
    }
    UnchownWritableDisks(rec);
    std::error_code ec;
    fs::remove_all(VmDir(rec.id), ec);
    if (ec) {
      logger_.Error("CreateVm undo: remove VM directory failed",
                    {{"vm_id", rec.id}, {"error", ec.message()}});
    }
    if (options_.jail) uids_->Release(rec.id);
    RemoveRecord(rec, reason, detail);
  }

  // DELETING -> gone: VMM, network, files, record. REQUIRES: rec.state == DELETING and the VM's
  // lock held (or recovery). On error the VM stays in DELETING; DeleteVm (or the next start-up)
  // finishes the job.
  base::Status FinishDelete(store::VmRecord& rec, TransitionReason reason, std::string_view rpc) {
    std::string ctx = Ctx(rpc, rec.id);
    base::Status st = backend_->Delete(rec.id);
    if (!st.ok() && st.code() != base::StatusCode::kNotFound) return st.WithContext(ctx);
    if (options_.jail) {
      RETURN_IF_ERROR(cgroups_->Remove(rec.customer_id, rec.id).WithContext(ctx + ": cgroup"));
    }
    if (network_ != nullptr) RETURN_IF_ERROR(network_->Teardown(rec.id).WithContext(ctx));
    UnchownWritableDisks(rec);
    std::error_code ec;
    fs::remove_all(VmDir(rec.id), ec);
    if (ec) return base::InternalError(ctx + ": remove VM directory: " + ec.message());
    // Released only now: nothing owned by the uid (TAP, VM directory, disks) remains.
    if (options_.jail) uids_->Release(rec.id);
    RETURN_IF_ERROR(repo_->Delete(rec.id, reason).WithContext(ctx));
    LogTransition(rec.id, rec.customer_id, VmState::kDeleting, VmState::kDeleted, reason, "");
    Notify();
    return base::OkStatus();
  }

  // Pause / Resume / Reboot: transient state, backend call, final state.
  base::Result<VmStateResponse> SimpleOp(
      const Caller& caller, const std::string& vm_id, VmOp op, std::string_view rpc,
      VmState final_state, const std::function<base::Status(const std::string&)>& call) {
    ASSIGN_OR_RETURN(LockedVm vm, LockVm(caller, vm_id));
    RETURN_IF_ERROR(model::CheckOperation(op, vm.rec.state));
    RETURN_IF_ERROR(Move(vm.rec, model::StartStateFor(op), TransitionReason::kUserRequest)
                        .WithContext(Ctx(rpc, vm_id)));
    base::Status st = call(vm_id);
    if (!st.ok()) return Fail(vm.rec, rpc, st);
    RETURN_IF_ERROR(
        Move(vm.rec, final_state, TransitionReason::kUserRequest).WithContext(Ctx(rpc, vm_id)));
    return VmStateResponse{vm.rec.state};
  }

  // Shutdown with the VM's lock held: RUNNING/PAUSED -> SHUTTING_DOWN -> STOPPED.
  base::Result<ShutdownVmResponse> ShutdownLocked(LockedVm& vm, bool force,
                                                  std::chrono::milliseconds timeout,
                                                  std::string_view rpc) {
    RETURN_IF_ERROR(model::CheckOperation(VmOp::kShutdown, vm.rec.state));
    std::string ctx = Ctx(rpc, vm.rec.id);
    RETURN_IF_ERROR(
        Move(vm.rec, VmState::kShuttingDown, TransitionReason::kUserRequest).WithContext(ctx));
    backend::ShutdownRequest req;
    req.graceful = !force;
    req.timeout = timeout;
    base::Result<backend::ShutdownResult> r = backend_->Shutdown(vm.rec.id, req);
    if (!r.ok()) return Fail(vm.rec, rpc, r.status());
    StopCgroup(vm.rec);  // The VMM is gone.
    TransitionReason reason = TransitionReason::kUserRequest;
    std::string detail;
    if (!force) {
      if (r->graceful) {
        reason = TransitionReason::kGuestShutdown;
        detail = "Guest powered off";
      } else {
        reason = TransitionReason::kTimeout;
        detail = "Guest did not power off within " + std::to_string(timeout.count()) +
                 " ms; VMM stopped";
      }
    }
    // The process goes first, so whoever sees STOPPED also sees no process.
    base::Result<store::VmRecord> cleared = repo_->UpdateProcess(vm.rec.id, store::ProcessInfo{});
    if (!cleared.ok()) return cleared.status().WithContext(ctx);
    vm.rec = std::move(cleared).value();
    RETURN_IF_ERROR(Move(vm.rec, VmState::kStopped, reason, detail).WithContext(ctx));
    return ShutdownVmResponse{vm.rec.state, r->graceful};
  }

  Vm View(const store::VmRecord& rec);

  // Waits until a transition is stored by this service after generation `gen`, `until`, or at
  // most poll_interval.
  void WaitForEvent(uint64_t gen, SteadyClock::time_point until) {
    std::unique_lock<std::mutex> lock(events_mu_);
    until = std::min(until, SteadyClock::now() + options_.poll_interval);
    events_cv_.wait_until(lock, until, [&] { return events_gen_ != gen; });
  }
  uint64_t EventGeneration() {
    std::lock_guard<std::mutex> lock(events_mu_);
    return events_gen_;
  }

  base::Status Recover();
  void ReserveUids(const std::vector<store::VmRecord>& all);
  void RemoveCgroupLeftovers();
  void RecoverOne(store::VmRecord rec);
  void MonitorLoop();
  void CheckVm(const std::string& vm_id);

  // Constant after construction.
  store::VmRepository* const repo_;
  backend::Backend* const backend_;
  net::Network* const network_;
  process::CgroupManager* const cgroups_;  // Non-null iff options_.jail.
  process::UidAllocator* const uids_;      // Non-null iff options_.jail.
  const ServiceOptions options_;
  const observe::Logger logger_;

  model::VmIdGenerator ids_;  // Thread-safe (default random source).
  internal::VmLocks locks_;   // Thread-safe.
  std::atomic<bool> recovered_{false};

  // Serialises CreateVm's quota check with its insert, so concurrent creates cannot both pass.
  std::mutex create_mu_;

  std::mutex events_mu_;
  std::condition_variable events_cv_;
  uint64_t events_gen_ = 0;  // Guarded by events_mu_. Bumped on every stored transition.

  std::mutex monitor_mu_;
  std::condition_variable monitor_cv_;
  bool stopping_ = false;  // Guarded by monitor_mu_.
  std::thread monitor_;    // Started by Start(), joined by the destructor.
};

// --- CreateVm ---

base::Result<CreateVmResponse> VmServiceImpl::CreateVm(const Caller& caller,
                                                       const CreateVmRequest& request) {
  RETURN_IF_ERROR(CheckCaller(caller));
  if (request.idempotency_key.size() > kMaxIdempotencyKeyBytes) {
    return base::InvalidArgumentError("idempotency_key must be at most 128 bytes");
  }
  const model::VmSpec& spec = request.spec;
  RETURN_IF_ERROR(model::ValidateSpec(spec, options_.limits));
  RETURN_IF_ERROR(CheckNetworkRequest(spec));
  std::string id = ids_.Next();
  std::string vm_dir = VmDir(id);
  ASSIGN_OR_RETURN(model::VmSpec resolved, ResolveSpec(spec, vm_dir));
  RETURN_IF_ERROR(CheckWritableDisks(resolved));

  // Nobody knows the id yet, except an idempotent retry, which only reads.
  std::optional<internal::VmLocks::Guard> guard = locks_.TryAcquire(id);
  METALD_CHECK(guard.has_value());

  store::CreateResult created;
  bool over_quota = false;
  {
    std::lock_guard<std::mutex> lock(create_mu_);
    if (options_.max_vms_per_customer > 0) {
      ASSIGN_OR_RETURN(int64_t count, repo_->CountByCustomer(caller.customer_id));
      over_quota = count >= options_.max_vms_per_customer;
      // Without a key there is nothing to return: refuse before storing anything.
      if (over_quota && request.idempotency_key.empty()) {
        return base::ResourceExhaustedError("Customer has reached the limit of " +
                                            std::to_string(options_.max_vms_per_customer) + " VMs");
      }
    }
    store::NewVm nv;
    nv.id = id;
    nv.customer_id = caller.customer_id;
    nv.spec = spec;
    nv.backend = backend_->kind();
    nv.idempotency_key = request.idempotency_key;
    ASSIGN_OR_RETURN(created, repo_->Create(nv));
    if (created.created) {
      LogTransition(id, caller.customer_id, std::nullopt, VmState::kCreating,
                    TransitionReason::kUserRequest, "");
      Notify();
    }
    if (!created.created) return CreateVmResponse{View(created.record), false};
    if (over_quota) {
      // An idempotency key over quota that was not a retry: undo the insert.
      RemoveRecord(created.record, TransitionReason::kUserRequest, "Quota exceeded");
      return base::ResourceExhaustedError("Customer has reached the limit of " +
                                          std::to_string(options_.max_vms_per_customer) + " VMs");
    }
  }
  store::VmRecord rec = std::move(created.record);
  std::string ctx = Ctx("CreateVm", id);

  std::optional<uid_t> uid;
  if (options_.jail) {
    base::Result<uid_t> u = uids_->Allocate(id);
    base::Status st = u.status();
    if (st.ok()) {
      uid = *u;
      st = ChownWritableDisks(resolved, *uid);
    }
    if (!st.ok()) {
      st = st.WithContext(ctx + ": jail");
      UndoCreate(rec, false, false, TransitionReason::kBackendError, st.message());
      return st;
    }
  }

  std::optional<net::VmNetwork> vnet;
  if (!spec.network.empty()) {
    net::VmNetworkRequest nreq;
    nreq.vm_id = id;
    nreq.customer_id = caller.customer_id;
    nreq.rx_bytes_per_sec = spec.network[0].rx_bytes_per_sec;
    nreq.tx_bytes_per_sec = spec.network[0].tx_bytes_per_sec;
    if (uid) {
      nreq.tap_owner_uid = *uid;
      nreq.tap_owner_gid = static_cast<gid_t>(*uid);
    }
    base::Result<net::VmNetwork> n = network_->Setup(nreq);
    if (!n.ok()) {
      base::Status st = n.status().WithContext(ctx);
      // Setup undoes its own steps; Teardown again in case it was cut short.
      UndoCreate(rec, false, true, TransitionReason::kBackendError, st.message());
      return st;
    }
    vnet = std::move(n).value();
  }

  backend::CreateRequest breq =
      MakeCreateRequest(id, std::move(resolved), vm_dir, vnet ? &*vnet : nullptr);
  bool backend_called = false;
  base::Status st;
  if (options_.jail) {
    base::Result<backend::VmJail> j = StartJail(rec);
    st = j.status();
    if (j.ok()) breq.jail = std::move(j).value();
  }
  base::Result<backend::VmHandle> handle = base::InternalError("not started");
  if (st.ok()) {
    backend_called = true;
    handle = backend_->Create(breq);
    st = handle.status();
  }
  if (st.ok()) {
    base::Result<store::VmRecord> r = repo_->UpdateProcess(id, ToProcessInfo(*handle));
    st = r.status();
    if (r.ok()) rec = std::move(r).value();
  }
  if (st.ok()) st = Move(rec, VmState::kCreated, TransitionReason::kUserRequest);
  if (!st.ok()) {
    st = st.WithContext(ctx);
    logger_.Warn("CreateVm failed; undoing", {{"vm_id", id}, {"error", st}});
    UndoCreate(rec, backend_called, vnet.has_value(), TransitionReason::kBackendError,
               st.message());
    return st;
  }
  return CreateVmResponse{View(rec), true};
}

// --- BootVm ---

base::Result<VmStateResponse> VmServiceImpl::BootVm(const Caller& caller,
                                                    const BootVmRequest& request) {
  ASSIGN_OR_RETURN(LockedVm vm, LockVm(caller, request.vm_id));
  RETURN_IF_ERROR(model::CheckOperation(VmOp::kBoot, vm.rec.state));
  std::string ctx = Ctx("BootVm", vm.rec.id);
  // A STOPPED VM has no VMM process: it gets a new one (a new incarnation) first.
  std::optional<backend::CreateRequest> create;
  if (vm.rec.state == VmState::kStopped) {
    base::Result<backend::CreateRequest> req = CreateRequestFor(vm.rec);
    if (!req.ok()) return req.status().WithContext(ctx);
    create = std::move(req).value();
  }
  RETURN_IF_ERROR(Move(vm.rec, VmState::kBooting, TransitionReason::kUserRequest).WithContext(ctx));
  if (create) {
    if (options_.jail) {
      base::Result<backend::VmJail> j = StartJail(vm.rec);
      if (!j.ok()) return Fail(vm.rec, "BootVm", j.status());
      create->jail = std::move(j).value();
    }
    base::Result<backend::VmHandle> handle = backend_->Create(*create);
    if (!handle.ok()) {
      StopCgroup(vm.rec);  // The backend leaves no process behind on error.
      return Fail(vm.rec, "BootVm", handle.status());
    }
    base::Result<store::VmRecord> r = repo_->UpdateProcess(vm.rec.id, ToProcessInfo(*handle));
    if (!r.ok()) return Fail(vm.rec, "BootVm", r.status());
    vm.rec = std::move(r).value();
  }
  base::Status st = backend_->Boot(vm.rec.id);
  if (!st.ok()) return Fail(vm.rec, "BootVm", st);
  RETURN_IF_ERROR(Move(vm.rec, VmState::kRunning, TransitionReason::kUserRequest).WithContext(ctx));
  return VmStateResponse{vm.rec.state};
}

// --- ShutdownVm / DeleteVm ---

base::Result<ShutdownVmResponse> VmServiceImpl::ShutdownVm(const Caller& caller,
                                                           const ShutdownVmRequest& request) {
  if (!request.force &&
      (request.timeout < std::chrono::milliseconds(1) || request.timeout > kMaxTimeout)) {
    return base::InvalidArgumentError("timeout must be between 1 ms and 10 min");
  }
  ASSIGN_OR_RETURN(LockedVm vm, LockVm(caller, request.vm_id));
  return ShutdownLocked(vm, request.force, request.timeout, "ShutdownVm");
}

base::Status VmServiceImpl::DeleteVm(const Caller& caller, const DeleteVmRequest& request) {
  ASSIGN_OR_RETURN(LockedVm vm, LockVm(caller, request.vm_id));
  std::string ctx = Ctx("DeleteVm", vm.rec.id);
  if (request.force && (vm.rec.state == VmState::kRunning || vm.rec.state == VmState::kPaused)) {
    base::Result<ShutdownVmResponse> r =
        ShutdownLocked(vm, /*force=*/true, std::chrono::milliseconds(0), "DeleteVm");
    // A VM the forced shutdown left FAILED is deleted all the same: that is what force means.
    if (!r.ok() && vm.rec.state != VmState::kFailed) return r.status();
  }
  // A VM found in DELETING under its lock is a delete that failed half-way: finish it.
  if (vm.rec.state != VmState::kDeleting) {
    RETURN_IF_ERROR(model::CheckOperation(VmOp::kDelete, vm.rec.state));
    RETURN_IF_ERROR(
        Move(vm.rec, VmState::kDeleting, TransitionReason::kUserRequest).WithContext(ctx));
  }
  return FinishDelete(vm.rec, TransitionReason::kUserRequest, "DeleteVm");
}

// --- Reads ---

Vm VmServiceImpl::View(const store::VmRecord& rec) {
  Vm v;
  v.id = rec.id;
  v.customer_id = rec.customer_id;
  v.state = rec.state;
  v.backend = rec.backend;
  v.spec = rec.spec;
  v.pid = rec.process.pid;
  v.incarnation = rec.incarnation;
  v.created_unix_ns = rec.created_unix_ns;
  v.updated_unix_ns = rec.updated_unix_ns;
  if (network_ != nullptr && !rec.spec.network.empty()) {
    base::Result<net::VmNetwork> n = network_->Lookup(rec.id);
    if (n.ok()) {
      VmNic nic;
      nic.id = rec.spec.network[0].id;
      nic.mac_address = n->mac;
      if (!n->ipv4.empty()) nic.ipv4_address = n->ipv4 + "/" + std::to_string(n->ipv4_prefix_len);
      nic.ipv4_gateway = n->ipv4_gateway;
      if (!n->ipv6.empty()) nic.ipv6_address = n->ipv6 + "/" + std::to_string(n->ipv6_prefix_len);
      nic.ipv6_gateway = n->ipv6_gateway;
      nic.tap_device = n->tap_name;
      v.spec.network[0].mac_address = n->mac;
      v.network.push_back(std::move(nic));
    }
  }
  // One Transitions read per VM (also in ListVms): fine for the history lengths we expect; a
  // "last transition" column in vms would make it O(1) if it ever shows up in profiles.
  base::Result<std::vector<store::TransitionRecord>> log = repo_->Transitions(rec.id);
  if (log.ok() && !log->empty()) {
    const store::TransitionRecord& last = log->back();
    v.state_reason = last.reason;
    v.state_message = CustomerMessage(last.reason, last.detail);
    for (const store::TransitionRecord& t : *log) {
      if (t.from == VmState::kBooting && t.to == VmState::kRunning) v.booted_unix_ns = t.at_unix_ns;
    }
  }
  return v;
}

base::Result<Vm> VmServiceImpl::GetVmInfo(const Caller& caller, const GetVmInfoRequest& request) {
  RETURN_IF_ERROR(CheckCaller(caller));
  if (request.vm_id.empty()) return base::InvalidArgumentError("vm_id is required");
  ASSIGN_OR_RETURN(store::VmRecord rec, repo_->Get(caller.customer_id, request.vm_id));
  return View(rec);
}

base::Result<ListVmsResponse> VmServiceImpl::ListVms(const Caller& caller,
                                                     const ListVmsRequest& request) {
  RETURN_IF_ERROR(CheckCaller(caller));
  if (request.page_size < 0) return base::InvalidArgumentError("page_size must not be negative");
  store::ListRequest lr;
  lr.customer_id = caller.customer_id;
  lr.page_size =
      request.page_size == 0 ? kDefaultPageSize : std::min(request.page_size, kMaxPageSize);
  lr.page_token = request.page_token;
  lr.states = request.states;
  ASSIGN_OR_RETURN(store::ListPage page, repo_->List(lr));
  ListVmsResponse out;
  out.next_page_token = std::move(page.next_page_token);
  out.vms.reserve(page.vms.size());
  for (const store::VmRecord& rec : page.vms) out.vms.push_back(View(rec));
  return out;
}

base::Result<Vm> VmServiceImpl::WaitVm(const Caller& caller, const WaitVmRequest& request) {
  RETURN_IF_ERROR(CheckCaller(caller));
  if (request.vm_id.empty()) return base::InvalidArgumentError("vm_id is required");
  if (request.states.empty()) return base::InvalidArgumentError("states must not be empty");
  if (request.timeout < std::chrono::milliseconds(1) || request.timeout > kMaxTimeout) {
    return base::InvalidArgumentError("timeout must be between 1 ms and 10 min");
  }
  SteadyClock::time_point deadline = SteadyClock::now() + request.timeout;
  if (caller.deadline) deadline = std::min(deadline, *caller.deadline);
  while (true) {
    uint64_t gen = EventGeneration();  // Before the read: no wake-up can be missed.
    ASSIGN_OR_RETURN(store::VmRecord rec, repo_->Get(caller.customer_id, request.vm_id));
    if (std::find(request.states.begin(), request.states.end(), rec.state) !=
        request.states.end()) {
      return View(rec);
    }
    if (caller.cancelled && caller.cancelled()) {
      return base::CancelledError("WaitVm " + request.vm_id + ": cancelled");
    }
    if (SteadyClock::now() >= deadline) {
      return base::DeadlineExceededError("WaitVm " + request.vm_id + ": VM is still in state " +
                                         std::string(model::StateName(rec.state)));
    }
    WaitForEvent(gen, deadline);
  }
}

base::Status VmServiceImpl::WatchVmEvents(const Caller& caller, const WatchVmEventsRequest& request,
                                          const std::function<bool(const VmEvent&)>& sink) {
  RETURN_IF_ERROR(CheckCaller(caller));
  if (!request.vm_id.empty()) {
    RETURN_IF_ERROR(repo_->Get(caller.customer_id, request.vm_id).status());
  }
  int64_t cursor = 0;
  if (request.after_seq) {
    cursor = std::max<int64_t>(0, *request.after_seq);
  } else {
    ASSIGN_OR_RETURN(cursor, repo_->LastSeq());
  }
  while (true) {
    uint64_t gen = EventGeneration();
    ASSIGN_OR_RETURN(std::vector<store::TransitionRecord> rows,
                     repo_->EventsSince(caller.customer_id, cursor, kEventBatch));
    for (const store::TransitionRecord& t : rows) {
      cursor = t.seq;
      if (!request.vm_id.empty() && t.vm_id != request.vm_id) continue;
      VmEvent e;
      e.seq = t.seq;
      e.vm_id = t.vm_id;
      e.from = t.from;
      e.to = t.to;
      e.reason = t.reason;
      e.message = CustomerMessage(t.reason, t.detail);
      e.at_unix_ns = t.at_unix_ns;
      if (!sink(e)) return base::OkStatus();
      // Nothing can follow the deletion of the one VM watched.
      if (!request.vm_id.empty() && t.to == VmState::kDeleted) return base::OkStatus();
    }
    if (static_cast<int>(rows.size()) == kEventBatch) continue;
    if (caller.cancelled && caller.cancelled()) return base::OkStatus();
    SteadyClock::time_point until = SteadyClock::time_point::max();
    if (caller.deadline) {
      if (SteadyClock::now() >= *caller.deadline) return base::OkStatus();
      until = *caller.deadline;
    }
    WaitForEvent(gen, until);
  }
}

// --- Monitor ---

void VmServiceImpl::MonitorLoop() {
  std::unique_lock<std::mutex> lock(monitor_mu_);
  while (!stopping_) {
    monitor_cv_.wait_for(lock, options_.monitor_interval, [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    base::Result<std::vector<store::VmRecord>> all = repo_->ListAll();
    if (!all.ok()) {
      logger_.Warn("Monitor: cannot list VMs", {{"error", all.status()}});
    } else {
      for (const store::VmRecord& rec : *all) {
        if (rec.process.pid == 0) continue;
        if (rec.state != VmState::kRunning && rec.state != VmState::kPaused &&
            rec.state != VmState::kCreated) {
          continue;
        }
        CheckVm(rec.id);
      }
    }
    lock.lock();
  }
}

void VmServiceImpl::CheckVm(const std::string& vm_id) {
  std::optional<internal::VmLocks::Guard> guard = locks_.TryAcquire(vm_id);
  if (!guard) return;  // A lifecycle call is running; it owns the state.
  base::Result<store::VmRecord> got = repo_->GetAny(vm_id);
  if (!got.ok()) return;
  store::VmRecord rec = std::move(got).value();
  if (rec.process.pid == 0 || (rec.state != VmState::kRunning && rec.state != VmState::kPaused &&
                               rec.state != VmState::kCreated)) {
    return;
  }
  base::Result<backend::VmInfo> info = backend_->Info(vm_id);
  if (!info.ok()) {
    logger_.Debug("Monitor: backend Info failed", {{"vm_id", vm_id}, {"error", info.status()}});
    return;
  }
  base::Status st;
  if (info->process_alive) {
    if (info->state != VmState::kFailed) return;
    st = Move(rec, VmState::kFailed, TransitionReason::kCrash, "VMM reports a guest error");
  } else {
    process::ExitInfo exit = info->exit.value_or(process::ExitInfo{});
    base::Result<store::VmRecord> r = repo_->UpdateProcess(vm_id, store::ProcessInfo{});
    if (r.ok()) rec = std::move(r).value();
    StopCgroup(rec);
    if (info->state == VmState::kStopped && rec.state == VmState::kRunning) {
      st = Move(rec, VmState::kStopped, TransitionReason::kGuestShutdown, "Guest powered off");
    } else {
      st = Move(rec, VmState::kFailed, TransitionReason::kCrash,
                "VMM exited: " + process::ToString(exit));
    }
  }
  if (!st.ok()) logger_.Warn("Monitor: cannot store state", {{"vm_id", vm_id}, {"error", st}});
}

// --- Recovery ---

base::Status VmServiceImpl::Recover() {
  ASSIGN_OR_RETURN(std::vector<store::VmRecord> all, repo_->ListAll());
  if (options_.jail) ReserveUids(all);
  for (store::VmRecord& rec : all) RecoverOne(std::move(rec));
  if (options_.jail) RemoveCgroupLeftovers();
  if (network_ != nullptr) {
    ASSIGN_OR_RETURN(std::vector<store::VmRecord> left, repo_->ListAll());
    std::set<std::string> keep;
    for (const store::VmRecord& rec : left) keep.insert(rec.id);
    base::Status st = network_->RemoveLeftovers(keep);
    if (!st.ok()) logger_.Warn("Recovery: removing network leftovers failed", {{"error", st}});
  }
  logger_.Info("Recovery finished", {{"vms", all.size()}});
  return base::OkStatus();
}

// The uid of a VM is not stored: it is the owner of the VM directory, which the backend chowns to
// the VM's uid before its first VMM starts and which lives until the VM is deleted. A VM without
// such a directory (caught in CREATING) gets no reservation; recovery undoes it anyway.
void VmServiceImpl::ReserveUids(const std::vector<store::VmRecord>& all) {
  for (const store::VmRecord& rec : all) {
    struct stat st {};
    if (::stat(VmDir(rec.id).c_str(), &st) != 0 || st.st_uid == 0) continue;
    base::Status r = uids_->Reserve(rec.id, st.st_uid);
    if (!r.ok()) {
      logger_.Error("Recovery: cannot reserve the VM's uid",
                    {{"vm_id", rec.id}, {"uid", static_cast<int64_t>(st.st_uid)}, {"error", r}});
    }
  }
}

// Removes every VM cgroup without a live VMM: groups of VMs no longer stored, and of stored VMs
// whose process is gone (recovery cleared it). Errors are logged.
void VmServiceImpl::RemoveCgroupLeftovers() {
  base::Result<std::vector<std::string>> left = cgroups_->ListLeftovers();
  if (!left.ok()) {
    logger_.Warn("Recovery: cannot list cgroups", {{"error", left.status()}});
    return;
  }
  std::set<std::pair<std::string, std::string>> groups;  // (customer, vm)
  for (const std::string& path : *left) {
    for (const std::string& root : cgroups_->RootDirs()) {
      if (path.rfind(root + "/", 0) != 0) continue;
      std::string rel = path.substr(root.size() + 1);
      size_t slash = rel.find('/');
      if (slash != std::string::npos) groups.emplace(rel.substr(0, slash), rel.substr(slash + 1));
    }
  }
  for (const auto& [customer, vm] : groups) {
    base::Result<store::VmRecord> rec = repo_->GetAny(vm);
    if (rec.ok() && rec->process.pid != 0) continue;
    base::Status st = cgroups_->Remove(customer, vm);
    if (!st.ok()) {
      logger_.Warn("Recovery: cannot remove a cgroup", {{"vm_id", vm}, {"error", st}});
    }
  }
}

void VmServiceImpl::RecoverOne(store::VmRecord rec) {
  const TransitionReason kRec = TransitionReason::kRecovered;
  const bool has_process = rec.process.pid != 0;
  bool adopted = false;
  if (has_process) {
    base::Result<backend::VmHandle> h = backend_->Adopt(HandleFromRecord(rec));
    adopted = h.ok() || h.status().code() == base::StatusCode::kAlreadyExists;
    if (!adopted) {
      logger_.Warn("Recovery: cannot adopt VMM", {{"vm_id", rec.id}, {"error", h.status()}});
    }
  }
  auto log_error = [&](const base::Status& st) {
    if (!st.ok()) logger_.Error("Recovery failed for VM", {{"vm_id", rec.id}, {"error", st}});
  };

  switch (rec.state) {
    case VmState::kCreating:
      // Like a failed CreateVm: nothing of it may remain.
      UndoCreate(rec, true, true, kRec, "Interrupted while creating");
      return;
    case VmState::kDeleting:
      log_error(FinishDelete(rec, kRec, "Recover"));
      return;
    case VmState::kStopped:
    case VmState::kFailed:
    case VmState::kDeleted:
      return;
    case VmState::kCreated:
      if (!has_process) return;
      break;
    default:
      break;
  }

  // Where the VM really is.
  VmState target = VmState::kFailed;
  bool alive = false;
  std::string detail;
  if (!has_process) {
    target = rec.state == VmState::kShuttingDown ? VmState::kStopped : VmState::kFailed;
    detail = "Interrupted by a daemon restart";
  } else if (!adopted) {
    detail = "VMM could not be re-adopted after a daemon restart";
  } else {
    base::Result<backend::VmInfo> info = backend_->Info(rec.id);
    if (!info.ok()) {
      detail = "VMM could not be queried after a daemon restart";
    } else if (info->process_alive) {
      alive = true;
      target = info->state;
      detail = "Reconciled after a daemon restart";
      if (rec.state == VmState::kShuttingDown) {
        // The shutdown the user asked for: finish it (forced).
        backend::ShutdownRequest req;
        req.graceful = false;
        base::Result<backend::ShutdownResult> r = backend_->Shutdown(rec.id, req);
        alive = !r.ok();
        target = r.ok() ? VmState::kStopped : VmState::kFailed;
        detail = r.ok() ? "Shutdown finished after a daemon restart"
                        : "Shutdown could not be finished after a daemon restart";
      }
    } else {
      target = info->state == VmState::kStopped ? VmState::kStopped : VmState::kFailed;
      detail = "VMM exited while the daemon was down: " +
               process::ToString(info->exit.value_or(process::ExitInfo{}));
    }
  }

  if (!alive && has_process) {
    base::Result<store::VmRecord> r = repo_->UpdateProcess(rec.id, store::ProcessInfo{});
    if (r.ok()) {
      rec = std::move(r).value();
    } else {
      log_error(r.status());
    }
  }
  if (target == rec.state) return;
  std::optional<std::vector<VmState>> path = PathTo(rec.state, target);
  if (!path) path = PathTo(rec.state, VmState::kFailed);
  if (!path) {
    log_error(base::InternalError("No transition from " + std::string(model::StateName(rec.state)) +
                                  " to FAILED"));
    return;
  }
  for (VmState s : *path) {
    base::Status st = Move(rec, s, kRec, detail);
    if (!st.ok()) {
      log_error(st);
      return;
    }
  }
}

}  // namespace

base::Result<std::unique_ptr<VmService>> StartVmService(ServiceDeps deps, ServiceOptions options) {
  if (deps.repository == nullptr) return base::InvalidArgumentError("deps.repository is required");
  if (deps.backend == nullptr) return base::InvalidArgumentError("deps.backend is required");
  if (!IsAbsolute(options.vm_root)) {
    return base::InvalidArgumentError("vm_root must be an absolute path");
  }
  while (options.vm_root.size() > 1 && options.vm_root.back() == '/') options.vm_root.pop_back();
  if (options.image_roots.empty()) {
    return base::InvalidArgumentError("image_roots must not be empty");
  }
  for (const std::string& root : options.image_roots) {
    if (!IsAbsolute(root)) {
      return base::InvalidArgumentError("image_roots: \"" + root + "\" is not an absolute path");
    }
  }
  if (options.max_vms_per_customer < 0) {
    return base::InvalidArgumentError("max_vms_per_customer must not be negative");
  }
  if (options.monitor_interval <= std::chrono::milliseconds(0)) {
    return base::InvalidArgumentError("monitor_interval must be positive");
  }
  if (options.poll_interval <= std::chrono::milliseconds(0)) {
    return base::InvalidArgumentError("poll_interval must be positive");
  }
  if (options.jail && (deps.cgroups == nullptr || deps.uids == nullptr)) {
    return base::InvalidArgumentError("jail needs deps.cgroups and deps.uids");
  }
  while (options.jail_writable_disk_dir.size() > 1 &&
         options.jail_writable_disk_dir.back() == '/') {
    options.jail_writable_disk_dir.pop_back();
  }
  if (!options.jail_writable_disk_dir.empty() && !IsAbsolute(options.jail_writable_disk_dir)) {
    return base::InvalidArgumentError("jail_writable_disk_dir must be an absolute path");
  }
  if (!options.now_unix_ns) options.now_unix_ns = SystemNowUnixNs;
  std::error_code ec;
  fs::create_directories(options.vm_root, ec);
  if (ec) {
    return base::InvalidArgumentError("vm_root: cannot create " + options.vm_root + ": " +
                                      ec.message());
  }
  auto service = std::make_unique<VmServiceImpl>(deps, std::move(options));
  RETURN_IF_ERROR(service->Start().WithContext("Start-up recovery"));
  return std::unique_ptr<VmService>(std::move(service));
}

}  // namespace metald::service

#pragma once
// FakeBackend: an in-memory Backend for tests of the service and anything above it. Test-only
// (library metald_backend_testing); production targets must not link it.
//
// It models what the service relies on: a registry of VMs (Create/Adopt fill it, Delete empties
// it), a fake "process" per VMM incarnation with a pid and start time, the VMM states of backend.h
// (created → running ⇄ paused, stopped, failed) and the precondition errors a real VMM returns.
// Tests can
//   * fail any operation on purpose (FailNext / FailAlways),
//   * run a hook before an operation (e.g. block Boot of one VM on a latch),
//   * make the guest power itself off (SimulateGuestPoweroff) or the VMM die (SimulateCrash),
//   * simulate a daemon restart (SimulateDaemonRestart): the registry is forgotten but the
//     processes live on, so a new service must Adopt them from their stored handles.
// Create makes the VM directory and Delete removes it, like the real backends, so tests can check
// that nothing is left on disk.
//
// Thread-safety: every method is safe to call concurrently. Hooks run without the fake's mutex
// held, so a hook may block.

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "metald/backend/backend.h"

namespace metald::backend::testing {

class FakeBackend : public Backend {
 public:
  enum class Op { kCreate, kBoot, kShutdown, kDelete, kPause, kResume, kReboot, kInfo, kAdopt };

  // One VM as the fake sees it. Plain value (a snapshot).
  struct FakeVm {
    VmHandle handle;
    CreateRequest last_create;  // What the last Create for this VM was given (empty if adopted).
    model::VmState state = model::VmState::kCreated;  // VMM view (backend.h VmInfo::state).
    bool alive = false;
    std::optional<process::ExitInfo> exit;
    bool adopted = false;
  };

  struct Options {
    model::BackendKind kind = model::BackendKind::kQemu;
    // Whether a graceful Shutdown finds a guest that powers off (graceful = true) or times out
    // and is forced (graceful = false, exit signal 9). Default: true.
    bool guest_honours_powerdown = true;
    // Returned by HealthCheck. Default: OK.
    base::Status health;
  };

  FakeBackend() : FakeBackend(Options{}) {}
  explicit FakeBackend(Options options);

  // --- Failure injection and hooks ---
  // The next `times` calls of `op` (any VM, or only `vm_id` when non-empty) return `status`
  // without doing anything.
  void FailNext(Op op, base::Status status, int times = 1, std::string vm_id = "");
  // Every call of `op` returns `status` until ClearFailures.
  void FailAlways(Op op, base::Status status);
  void ClearFailures();
  // Runs before every call of `op` (before failure injection), without the mutex held. Replaces
  // an earlier hook for `op`; an empty function removes it.
  void SetHook(Op op, std::function<void(std::string_view vm_id)> hook);
  void set_guest_honours_powerdown(bool v);
  void set_health(base::Status status);

  // --- Simulated events ---
  // The guest powered itself off: the VMM process exits with status 0. not_found if unknown.
  base::Status SimulateGuestPoweroff(std::string_view vm_id);
  // The VMM process died from `signal` (exit known) or, with signal 0, vanished (exit unknown).
  base::Status SimulateCrash(std::string_view vm_id, int signal = 9);
  // metald restarted: the registry is emptied, every process keeps running (and its state). A new
  // service must Adopt them. Processes that die while "metald is down" can be simulated by
  // SimulateCrash / SimulateGuestPoweroff before this call.
  void SimulateDaemonRestart();

  // --- Inspection ---
  std::optional<FakeVm> Get(std::string_view vm_id) const;
  bool Has(std::string_view vm_id) const;
  int calls(Op op) const;
  // Number of processes still alive (registered or not).
  int live_processes() const;

  // --- Backend ---
  model::BackendKind kind() const override { return options_.kind; }
  base::Result<VmHandle> Create(const CreateRequest& request) override;
  base::Status Boot(std::string_view vm_id) override;
  base::Result<ShutdownResult> Shutdown(std::string_view vm_id,
                                        const ShutdownRequest& request) override;
  base::Status Delete(std::string_view vm_id) override;
  base::Status Pause(std::string_view vm_id) override;
  base::Status Resume(std::string_view vm_id) override;
  base::Status Reboot(std::string_view vm_id) override;
  base::Result<VmInfo> Info(std::string_view vm_id) override;
  std::vector<std::string> List() override;
  base::Result<model::UsageSample> Metrics(std::string_view vm_id) override;
  base::Status HealthCheck() override;
  base::Result<VmHandle> Adopt(const VmHandle& stored) override;

 private:
  // A fake VMM process. Outlives the registry entry (SimulateDaemonRestart).
  struct Proc {
    pid_t pid = 0;
    model::VmState state = model::VmState::kCreated;
    bool alive = true;
    std::optional<process::ExitInfo> exit;
  };
  struct Entry {
    VmHandle handle;
    CreateRequest last_create;
    bool adopted = false;
  };
  struct Failure {
    base::Status status;
    int remaining = 0;  // -1 = always.
    std::string vm_id;  // Empty = any VM.
  };

  // Hook then injected failure for `op`; OK to proceed.
  base::Status Enter(Op op, std::string_view vm_id);
  // REQUIRES: mu_ held. The entry and its process, or not_found.
  base::Status Find(std::string_view vm_id, const char* op, Entry** entry, Proc** proc);
  base::Status Transition(std::string_view vm_id, Op op, const char* name, model::VmState from,
                          model::VmState to);

  mutable std::mutex mu_;
  Options options_;                                            // Guarded by mu_ (mutable fields).
  std::map<std::string, Entry, std::less<>> vms_;              // Guarded by mu_.
  std::map<uint64_t, Proc> procs_;                             // Guarded by mu_. Key: start_time.
  std::map<Op, std::vector<Failure>> failures_;                // Guarded by mu_.
  std::map<Op, std::function<void(std::string_view)>> hooks_;  // Guarded by mu_.
  std::map<Op, int> calls_;                                    // Guarded by mu_.
  int next_pid_ = 40000;                                       // Guarded by mu_.
};

std::string_view OpName(FakeBackend::Op op);

}  // namespace metald::backend::testing

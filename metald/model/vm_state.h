#pragma once
// The VM lifecycle state machine as pure functions: the state enum, the transition table, which
// user operation may start in which state, and the reasons recorded with every transition.
//
// Thread-safety: stateless pure functions; safe from any thread.
//
// The table (seed diagram, plus the additions marked [+]):
//
//   from \ to     allowed targets
//   CREATING      CREATED, FAILED
//   CREATED       BOOTING, DELETING, FAILED[+ VMM process died before boot]
//   BOOTING       RUNNING, FAILED
//   RUNNING       PAUSING, REBOOTING, SHUTTING_DOWN,
//                 STOPPED[+ guest powered itself off / VMM exited cleanly],
//                 FAILED[+ VMM process crashed or was killed]
//   PAUSING       PAUSED, FAILED
//   PAUSED        RESUMING, SHUTTING_DOWN, FAILED[+ VMM process died while paused]
//   RESUMING      RUNNING, FAILED
//   REBOOTING     RUNNING, FAILED
//   SHUTTING_DOWN STOPPED, FAILED
//   STOPPED       DELETING, BOOTING[+ start again]
//   FAILED        DELETING
//   DELETING      DELETED
//   DELETED       (terminal)
//
// A running VM whose process goes away is represented by the transition it takes, with a reason:
// RUNNING -> STOPPED with kGuestShutdown (the guest powered off, e.g. `poweroff` inside) or
// kProcessExit (the VMM exited with status 0 for another reason), and RUNNING/PAUSED/CREATED ->
// FAILED with kCrash (non-zero exit, signal, or the process vanished). No state transitions to
// itself. DELETED is the seed's final "[*]": the store never keeps a VM in it (the row is removed),
// it only appears in the transition log and event streams so watchers see the deletion.

#include <optional>
#include <string_view>

#include "metald/base/status.h"

namespace metald::model {

enum class VmState {
  kCreating,
  kCreated,
  kBooting,
  kRunning,
  kPausing,
  kPaused,
  kResuming,
  kRebooting,
  kShuttingDown,
  kStopped,
  kFailed,
  kDeleting,
  kDeleted,
};

// Every state, in declaration order (for exhaustive tests and iteration).
inline constexpr VmState kAllVmStates[] = {
    VmState::kCreating,     VmState::kCreated, VmState::kBooting,  VmState::kRunning,
    VmState::kPausing,      VmState::kPaused,  VmState::kResuming, VmState::kRebooting,
    VmState::kShuttingDown, VmState::kStopped, VmState::kFailed,   VmState::kDeleting,
    VmState::kDeleted,
};

// "CREATING", "RUNNING", "SHUTTING_DOWN", ... (stable: stored in the database and logs).
std::string_view StateName(VmState state);
// Inverse of StateName (exact, upper case); nullopt for anything else.
std::optional<VmState> ParseVmState(std::string_view name);

// OK when `from -> to` is in the table above; otherwise failed_precondition naming both states,
// e.g. "Invalid VM state transition from STOPPED to RUNNING".
base::Status CheckTransition(VmState from, VmState to);

// True for states in which a user operation is in flight (CREATING, BOOTING, PAUSING, RESUMING,
// REBOOTING, SHUTTING_DOWN, DELETING). Startup recovery must reconcile VMs found in these states.
bool IsTransient(VmState state);

// The user-requested lifecycle operations (CreateVm has no precondition state and is not listed).
enum class VmOp { kBoot, kPause, kResume, kReboot, kShutdown, kDelete };

inline constexpr VmOp kAllVmOps[] = {VmOp::kBoot,   VmOp::kPause,    VmOp::kResume,
                                     VmOp::kReboot, VmOp::kShutdown, VmOp::kDelete};

// Lower-case verb used in messages: "boot", "pause", "resume", "reboot", "shut down", "delete".
std::string_view OpName(VmOp op);

// The transient state an operation moves the VM into when it starts: kBoot -> BOOTING,
// kPause -> PAUSING, kResume -> RESUMING, kReboot -> REBOOTING, kShutdown -> SHUTTING_DOWN,
// kDelete -> DELETING.
VmState StartStateFor(VmOp op);

// OK when `op` may start in `current`, i.e. exactly when CheckTransition(current,
// StartStateFor(op)) is OK. Otherwise failed_precondition naming the current state:
// "Cannot pause VM in state STOPPED".
base::Status CheckOperation(VmOp op, VmState current);

// Why a transition happened; stored with every row of the transition log.
enum class TransitionReason {
  kUserRequest,    // An API call started the operation or its success completed it.
  kBackendError,   // The VMM refused or failed the operation (the detail holds its message).
  kGuestShutdown,  // The guest powered itself off.
  kGuestReboot,    // The guest rebooted itself.
  kProcessExit,    // The VMM process exited cleanly without a guest power-off.
  kCrash,          // The VMM process died abnormally (signal, non-zero exit, vanished).
  kTimeout,        // An operation did not finish in time (e.g. graceful shutdown -> forced).
  kRecovered,      // Startup recovery reconciled the stored state with reality.
};

inline constexpr TransitionReason kAllTransitionReasons[] = {
    TransitionReason::kUserRequest,   TransitionReason::kBackendError,
    TransitionReason::kGuestShutdown, TransitionReason::kGuestReboot,
    TransitionReason::kProcessExit,   TransitionReason::kCrash,
    TransitionReason::kTimeout,       TransitionReason::kRecovered,
};

// "user_request", "backend_error", "guest_shutdown", "guest_reboot", "process_exit", "crash",
// "timeout", "recovered" (stable: stored in the database).
std::string_view ReasonName(TransitionReason reason);
// Inverse of ReasonName; nullopt for anything else.
std::optional<TransitionReason> ParseTransitionReason(std::string_view name);

}  // namespace metald::model

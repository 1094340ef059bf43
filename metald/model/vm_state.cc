#include "metald/model/vm_state.h"

#include <string>

namespace metald::model {

std::string_view StateName(VmState state) {
  switch (state) {
    case VmState::kCreating:
      return "CREATING";
    case VmState::kCreated:
      return "CREATED";
    case VmState::kBooting:
      return "BOOTING";
    case VmState::kRunning:
      return "RUNNING";
    case VmState::kPausing:
      return "PAUSING";
    case VmState::kPaused:
      return "PAUSED";
    case VmState::kResuming:
      return "RESUMING";
    case VmState::kRebooting:
      return "REBOOTING";
    case VmState::kShuttingDown:
      return "SHUTTING_DOWN";
    case VmState::kStopped:
      return "STOPPED";
    case VmState::kFailed:
      return "FAILED";
    case VmState::kDeleting:
      return "DELETING";
    case VmState::kDeleted:
      return "DELETED";
  }
  return "UNKNOWN";
}

std::optional<VmState> ParseVmState(std::string_view name) {
  for (VmState s : kAllVmStates) {
    if (StateName(s) == name) return s;
  }
  return std::nullopt;
}

namespace {

// The table of vm_state.h. Written as one switch per source state so that a new state fails to
// compile (-Wswitch) until its row is decided.
bool Allowed(VmState from, VmState to) {
  using S = VmState;
  switch (from) {
    case S::kCreating:
      return to == S::kCreated || to == S::kFailed;
    case S::kCreated:
      return to == S::kBooting || to == S::kDeleting || to == S::kFailed;
    case S::kBooting:
      return to == S::kRunning || to == S::kFailed;
    case S::kRunning:
      return to == S::kPausing || to == S::kRebooting || to == S::kShuttingDown ||
             to == S::kStopped || to == S::kFailed;
    case S::kPausing:
      return to == S::kPaused || to == S::kFailed;
    case S::kPaused:
      return to == S::kResuming || to == S::kShuttingDown || to == S::kFailed;
    case S::kResuming:
      return to == S::kRunning || to == S::kFailed;
    case S::kRebooting:
      return to == S::kRunning || to == S::kFailed;
    case S::kShuttingDown:
      return to == S::kStopped || to == S::kFailed;
    case S::kStopped:
      return to == S::kDeleting || to == S::kBooting;
    case S::kFailed:
      return to == S::kDeleting;
    case S::kDeleting:
      return to == S::kDeleted;
    case S::kDeleted:
      return false;
  }
  return false;
}

}  // namespace

base::Status CheckTransition(VmState from, VmState to) {
  if (Allowed(from, to)) return base::OkStatus();
  std::string msg = "Invalid VM state transition from ";
  msg += StateName(from);
  msg += " to ";
  msg += StateName(to);
  return base::FailedPreconditionError(std::move(msg));
}

bool IsTransient(VmState state) {
  switch (state) {
    case VmState::kCreating:
    case VmState::kBooting:
    case VmState::kPausing:
    case VmState::kResuming:
    case VmState::kRebooting:
    case VmState::kShuttingDown:
    case VmState::kDeleting:
      return true;
    case VmState::kCreated:
    case VmState::kRunning:
    case VmState::kPaused:
    case VmState::kStopped:
    case VmState::kFailed:
    case VmState::kDeleted:
      return false;
  }
  return false;
}

std::string_view OpName(VmOp op) {
  switch (op) {
    case VmOp::kBoot:
      return "boot";
    case VmOp::kPause:
      return "pause";
    case VmOp::kResume:
      return "resume";
    case VmOp::kReboot:
      return "reboot";
    case VmOp::kShutdown:
      return "shut down";
    case VmOp::kDelete:
      return "delete";
  }
  return "operate on";
}

VmState StartStateFor(VmOp op) {
  switch (op) {
    case VmOp::kBoot:
      return VmState::kBooting;
    case VmOp::kPause:
      return VmState::kPausing;
    case VmOp::kResume:
      return VmState::kResuming;
    case VmOp::kReboot:
      return VmState::kRebooting;
    case VmOp::kShutdown:
      return VmState::kShuttingDown;
    case VmOp::kDelete:
      return VmState::kDeleting;
  }
  return VmState::kFailed;
}

base::Status CheckOperation(VmOp op, VmState current) {
  if (Allowed(current, StartStateFor(op))) return base::OkStatus();
  std::string msg = "Cannot ";
  msg += OpName(op);
  msg += " VM in state ";
  msg += StateName(current);
  return base::FailedPreconditionError(std::move(msg));
}

std::string_view ReasonName(TransitionReason reason) {
  switch (reason) {
    case TransitionReason::kUserRequest:
      return "user_request";
    case TransitionReason::kBackendError:
      return "backend_error";
    case TransitionReason::kGuestShutdown:
      return "guest_shutdown";
    case TransitionReason::kGuestReboot:
      return "guest_reboot";
    case TransitionReason::kProcessExit:
      return "process_exit";
    case TransitionReason::kCrash:
      return "crash";
    case TransitionReason::kTimeout:
      return "timeout";
    case TransitionReason::kRecovered:
      return "recovered";
  }
  return "unknown";
}

std::optional<TransitionReason> ParseTransitionReason(std::string_view name) {
  for (TransitionReason r : kAllTransitionReasons) {
    if (ReasonName(r) == name) return r;
  }
  return std::nullopt;
}

}  // namespace metald::model

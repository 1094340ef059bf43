#include "metald/service/internal/vm_locks.h"

#include <algorithm>

namespace metald::service::internal {

base::Result<VmLocks::Guard> VmLocks::Acquire(
    const std::string& vm_id, std::optional<std::chrono::steady_clock::time_point> deadline,
    const std::function<bool()>& cancelled, std::chrono::milliseconds poll) {
  std::unique_lock<std::mutex> lock(mu_);
  Entry& e = locks_[vm_id];  // std::map: references stay valid while the entry exists.
  ++e.waiters;
  base::Status failure;
  while (e.held) {
    if (cancelled && cancelled()) {
      failure = base::CancelledError("Call cancelled while waiting for VM " + vm_id);
      break;
    }
    auto now = std::chrono::steady_clock::now();
    if (deadline && now >= *deadline) {
      failure = base::DeadlineExceededError("VM " + vm_id + " is busy");
      break;
    }
    auto until = now + poll;
    if (deadline) until = std::min(until, *deadline);
    cv_.wait_until(lock, until);
  }
  --e.waiters;
  if (!failure.ok()) {
    if (!e.held && e.waiters == 0) locks_.erase(vm_id);
    return failure;
  }
  e.held = true;
  return Guard(this, vm_id);
}

std::optional<VmLocks::Guard> VmLocks::TryAcquire(const std::string& vm_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = locks_[vm_id];
  if (e.held) return std::nullopt;
  e.held = true;
  return Guard(this, vm_id);
}

size_t VmLocks::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return locks_.size();
}

void VmLocks::Release(const std::string& vm_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = locks_.find(vm_id);
    if (it == locks_.end()) return;
    it->second.held = false;
    if (it->second.waiters == 0) locks_.erase(it);
  }
  cv_.notify_all();
}

}  // namespace metald::service::internal

#pragma once
// VmLocks: the per-VM lock of the service (its "actor"): lifecycle calls on one VM hold the VM's
// lock for their whole duration, so they run one at a time; calls on different VMs never share a
// lock. Entries exist only while the lock is held or waited for (refcounted in the table), so the
// table does not grow with the number of VMs ever seen.
//
// Thread-safety: all methods are safe to call concurrently. A Guard is owned by one thread.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "metald/base/status.h"

namespace metald::service::internal {

class VmLocks {
 public:
  // Holds one VM's lock; releases it when destroyed. Move-only.
  class Guard {
   public:
    Guard(Guard&& other) noexcept : locks_(other.locks_), id_(std::move(other.id_)) {
      other.locks_ = nullptr;
    }
    Guard& operator=(Guard&&) = delete;
    Guard(const Guard&) = delete;
    ~Guard() {
      if (locks_ != nullptr) locks_->Release(id_);
    }

   private:
    friend class VmLocks;
    Guard(VmLocks* locks, std::string id) : locks_(locks), id_(std::move(id)) {}
    VmLocks* locks_;
    std::string id_;
  };

  // Waits for `vm_id`'s lock until `deadline` (nullopt = forever), re-checking `cancelled` (may be
  // empty) every `poll`. Errors: deadline_exceeded "VM <id> is busy"; cancelled.
  base::Result<Guard> Acquire(const std::string& vm_id,
                              std::optional<std::chrono::steady_clock::time_point> deadline,
                              const std::function<bool()>& cancelled,
                              std::chrono::milliseconds poll = std::chrono::milliseconds(50));

  // The lock if it is free right now; nullopt when another call holds it.
  std::optional<Guard> TryAcquire(const std::string& vm_id);

  // Number of VMs whose lock is held or waited for (tests: the table cleans up after itself).
  size_t size() const;

 private:
  struct Entry {
    bool held = false;
    int waiters = 0;
  };
  void Release(const std::string& vm_id);

  mutable std::mutex mu_;
  std::condition_variable cv_;          // Notified on every Release.
  std::map<std::string, Entry> locks_;  // Guarded by mu_. Invariant: held || waiters > 0.
};

}  // namespace metald::service::internal

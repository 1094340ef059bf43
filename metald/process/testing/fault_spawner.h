#pragma once
// FaultSpawner: a ProcessSpawner that forwards to another one and fails chosen calls on purpose
// (leveldb's EnvWrapper pattern). Tests only.
//
// Thread-safety: the fault fields are set before use and read concurrently; set them only while no
// call is in flight.

#include <atomic>
#include <optional>

#include "metald/process/process.h"

namespace metald::process::testing {

class FaultSpawner : public ProcessSpawner {
 public:
  // `base` must outlive this object.
  explicit FaultSpawner(ProcessSpawner* base) : base_(base) {}

  // When set, Spawn returns this status without starting anything.
  std::optional<base::Status> spawn_error;
  // Counts Spawn calls (including failed ones).
  std::atomic<int> spawn_calls{0};

  base::Result<ProcessId> Spawn(const SpawnSpec& spec) override {
    ++spawn_calls;
    if (spawn_error) return *spawn_error;
    return base_->Spawn(spec);
  }
  bool IsAlive(const ProcessId& id) override { return base_->IsAlive(id); }
  base::Status Signal(const ProcessId& id, int sig) override { return base_->Signal(id, sig); }
  base::Result<ExitInfo> WaitForExit(const ProcessId& id,
                                     std::chrono::milliseconds timeout) override {
    return base_->WaitForExit(id, timeout);
  }
  base::Result<ExitInfo> Kill(const ProcessId& id, std::chrono::milliseconds timeout) override {
    return base_->Kill(id, timeout);
  }
  base::Result<ProcessUsage> Usage(const ProcessId& id) override { return base_->Usage(id); }
  base::Result<ProcessId> Identify(pid_t pid) override { return base_->Identify(pid); }

 private:
  ProcessSpawner* base_;
};

}  // namespace metald::process::testing

#pragma once
// A CommandRunner wrapper for tests (leveldb's SpecialEnv idea): records every command and makes
// the n-th one fail on purpose, either before it runs (nothing happened) or after it ran (the
// effect happened but the caller sees a failure — the half-done step a crash or a lost reply
// leaves).
//
// Thread-safety: all methods are safe to call concurrently.

#include <mutex>
#include <string>
#include <vector>

#include "metald/net/command_runner.h"

namespace metald::net::testing {

class FaultInjectingRunner : public CommandRunner {
 public:
  enum class When { kBefore, kAfter };

  // Does not own `base`. REQUIRES: base outlives this runner.
  explicit FaultInjectingRunner(CommandRunner* base) : base_(base) {}

  // Makes the n-th command (0-based, counted from this call) fail, once. The injected failure is
  // exit code 97 with stderr "injected failure".
  void FailNth(int n, When when);
  // Cancels a pending failure.
  void Disarm();
  // Commands run since the last FailNth/ResetLog (the failed one included).
  std::vector<std::string> log() const;
  void ResetLog();

  base::Result<CommandResult> Run(const Command& command) override;

 private:
  CommandRunner* const base_;
  mutable std::mutex mu_;
  int countdown_ = -1;  // Guarded by mu_. -1 = nothing armed.
  When when_ = When::kBefore;
  std::vector<std::string> log_;
};

}  // namespace metald::net::testing

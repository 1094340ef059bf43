#include "metald/net/testing/fault_injecting_runner.h"

namespace metald::net::testing {

void FaultInjectingRunner::FailNth(int n, When when) {
  std::lock_guard<std::mutex> lock(mu_);
  countdown_ = n;
  when_ = when;
  log_.clear();
}

void FaultInjectingRunner::Disarm() {
  std::lock_guard<std::mutex> lock(mu_);
  countdown_ = -1;
}

std::vector<std::string> FaultInjectingRunner::log() const {
  std::lock_guard<std::mutex> lock(mu_);
  return log_;
}

void FaultInjectingRunner::ResetLog() {
  std::lock_guard<std::mutex> lock(mu_);
  log_.clear();
}

base::Result<CommandResult> FaultInjectingRunner::Run(const Command& command) {
  bool fail = false;
  When when = When::kBefore;
  {
    std::lock_guard<std::mutex> lock(mu_);
    log_.push_back(command.ToString());
    if (countdown_ == 0) {
      fail = true;
      when = when_;
    }
    if (countdown_ >= 0) --countdown_;
  }
  CommandResult injected{97, "", "injected failure"};
  if (!fail) return base_->Run(command);
  if (when == When::kAfter) {
    base::Result<CommandResult> real = base_->Run(command);
    if (!real.ok()) return real;
  }
  return injected;
}

}  // namespace metald::net::testing

#include "metald/backend/testing/fake_backend.h"

#include <filesystem>
#include <system_error>

namespace metald::backend::testing {

namespace fs = std::filesystem;
using model::VmState;

std::string_view OpName(FakeBackend::Op op) {
  switch (op) {
    case FakeBackend::Op::kCreate:
      return "Create";
    case FakeBackend::Op::kBoot:
      return "Boot";
    case FakeBackend::Op::kShutdown:
      return "Shutdown";
    case FakeBackend::Op::kDelete:
      return "Delete";
    case FakeBackend::Op::kPause:
      return "Pause";
    case FakeBackend::Op::kResume:
      return "Resume";
    case FakeBackend::Op::kReboot:
      return "Reboot";
    case FakeBackend::Op::kInfo:
      return "Info";
    case FakeBackend::Op::kAdopt:
      return "Adopt";
  }
  return "?";
}

FakeBackend::FakeBackend(Options options) : options_(std::move(options)) {}

void FakeBackend::FailNext(Op op, base::Status status, int times, std::string vm_id) {
  std::lock_guard<std::mutex> lock(mu_);
  failures_[op].push_back(Failure{std::move(status), times, std::move(vm_id)});
}

void FakeBackend::FailAlways(Op op, base::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  failures_[op].push_back(Failure{std::move(status), -1, ""});
}

void FakeBackend::ClearFailures() {
  std::lock_guard<std::mutex> lock(mu_);
  failures_.clear();
}

void FakeBackend::SetHook(Op op, std::function<void(std::string_view)> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  if (hook) {
    hooks_[op] = std::move(hook);
  } else {
    hooks_.erase(op);
  }
}

void FakeBackend::set_guest_honours_powerdown(bool v) {
  std::lock_guard<std::mutex> lock(mu_);
  options_.guest_honours_powerdown = v;
}

void FakeBackend::set_health(base::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  options_.health = std::move(status);
}

base::Status FakeBackend::Enter(Op op, std::string_view vm_id) {
  std::function<void(std::string_view)> hook;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++calls_[op];
    auto it = hooks_.find(op);
    if (it != hooks_.end()) hook = it->second;
  }
  if (hook) hook(vm_id);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = failures_.find(op);
  if (it == failures_.end()) return base::OkStatus();
  for (auto f = it->second.begin(); f != it->second.end(); ++f) {
    if (!f->vm_id.empty() && f->vm_id != vm_id) continue;
    base::Status st = f->status;
    if (f->remaining > 0 && --f->remaining == 0) it->second.erase(f);
    return st;
  }
  return base::OkStatus();
}

base::Status FakeBackend::Find(std::string_view vm_id, const char* op, Entry** entry, Proc** proc) {
  auto it = vms_.find(vm_id);
  if (it == vms_.end()) {
    return base::NotFoundError(std::string(op) + " " + std::string(vm_id) +
                               ": VM is not registered with the fake backend");
  }
  *entry = &it->second;
  *proc = &procs_[it->second.handle.process.start_time];
  return base::OkStatus();
}

base::Result<VmHandle> FakeBackend::Create(const CreateRequest& request) {
  RETURN_IF_ERROR(Enter(Op::kCreate, request.vm_id));
  std::string ctx = "Create " + request.vm_id;
  if (request.vm_id.empty()) return base::InvalidArgumentError(ctx + ": vm_id is empty");
  if (request.vm_dir.empty() || request.vm_dir[0] != '/') {
    return base::InvalidArgumentError(ctx + ": vm_dir must be an absolute path");
  }
  if (request.tap_devices.size() != request.spec.network.size()) {
    return base::InvalidArgumentError(ctx + ": one TAP device per network interface is required");
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = vms_.find(request.vm_id);
  if (it != vms_.end()) {
    if (procs_[it->second.handle.process.start_time].alive) {
      return base::AlreadyExistsError(ctx + ": the VM's VMM process is running");
    }
    vms_.erase(it);
  }
  std::error_code ec;
  fs::create_directories(request.vm_dir, ec);
  if (ec) return base::InternalError(ctx + ": mkdir " + request.vm_dir + ": " + ec.message());
  Entry e;
  e.handle.vm_id = request.vm_id;
  e.handle.kind = options_.kind;
  int n = next_pid_++;
  e.handle.process = process::ProcessId{static_cast<pid_t>(n), static_cast<uint64_t>(n) * 10};
  e.handle.vm_dir = request.vm_dir;
  e.handle.api_socket = request.vm_dir + "/fake.sock";
  e.handle.console_log = request.spec.console.log_file.empty() ? request.vm_dir + "/console.log"
                                                               : request.spec.console.log_file;
  e.handle.tap_devices = request.tap_devices;
  e.last_create = request;
  Proc p;
  p.pid = e.handle.process.pid;
  procs_[e.handle.process.start_time] = p;
  VmHandle handle = e.handle;
  vms_[request.vm_id] = std::move(e);
  return handle;
}

base::Status FakeBackend::Transition(std::string_view vm_id, Op op, const char* name, VmState from,
                                     VmState to) {
  RETURN_IF_ERROR(Enter(op, vm_id));
  std::lock_guard<std::mutex> lock(mu_);
  Entry* e = nullptr;
  Proc* p = nullptr;
  RETURN_IF_ERROR(Find(vm_id, name, &e, &p));
  std::string ctx = std::string(name) + " " + std::string(vm_id);
  if (!p->alive) return base::FailedPreconditionError(ctx + ": the VMM process has exited");
  if (p->state != from) {
    return base::FailedPreconditionError(ctx + ": VMM is in state " +
                                         std::string(model::StateName(p->state)));
  }
  p->state = to;
  return base::OkStatus();
}

base::Status FakeBackend::Boot(std::string_view vm_id) {
  return Transition(vm_id, Op::kBoot, "Boot", VmState::kCreated, VmState::kRunning);
}

base::Status FakeBackend::Pause(std::string_view vm_id) {
  return Transition(vm_id, Op::kPause, "Pause", VmState::kRunning, VmState::kPaused);
}

base::Status FakeBackend::Resume(std::string_view vm_id) {
  return Transition(vm_id, Op::kResume, "Resume", VmState::kPaused, VmState::kRunning);
}

base::Status FakeBackend::Reboot(std::string_view vm_id) {
  return Transition(vm_id, Op::kReboot, "Reboot", VmState::kRunning, VmState::kRunning);
}

base::Result<ShutdownResult> FakeBackend::Shutdown(std::string_view vm_id,
                                                   const ShutdownRequest& request) {
  RETURN_IF_ERROR(Enter(Op::kShutdown, vm_id));
  std::lock_guard<std::mutex> lock(mu_);
  Entry* e = nullptr;
  Proc* p = nullptr;
  RETURN_IF_ERROR(Find(vm_id, "Shutdown", &e, &p));
  ShutdownResult r;
  if (!p->alive) {
    r.graceful = false;
    r.exit = p->exit.value_or(process::ExitInfo{});
    return r;
  }
  p->alive = false;
  if (request.graceful && options_.guest_honours_powerdown) {
    r.graceful = true;
    r.exit = process::ExitInfo{true, 0, 0};
  } else {
    r.graceful = false;
    r.exit = process::ExitInfo{true, -1, 9};
  }
  p->exit = r.exit;
  p->state = VmState::kStopped;
  return r;
}

base::Status FakeBackend::Delete(std::string_view vm_id) {
  RETURN_IF_ERROR(Enter(Op::kDelete, vm_id));
  std::lock_guard<std::mutex> lock(mu_);
  Entry* e = nullptr;
  Proc* p = nullptr;
  RETURN_IF_ERROR(Find(vm_id, "Delete", &e, &p));
  if (p->alive) {
    p->alive = false;
    p->exit = process::ExitInfo{true, -1, 9};
    p->state = VmState::kFailed;
  }
  std::error_code ec;
  fs::remove_all(e->handle.vm_dir, ec);
  if (ec) {
    return base::InternalError("Delete " + std::string(vm_id) + ": remove " + e->handle.vm_dir +
                               ": " + ec.message());
  }
  vms_.erase(vms_.find(vm_id));
  return base::OkStatus();
}

base::Result<VmInfo> FakeBackend::Info(std::string_view vm_id) {
  RETURN_IF_ERROR(Enter(Op::kInfo, vm_id));
  std::lock_guard<std::mutex> lock(mu_);
  Entry* e = nullptr;
  Proc* p = nullptr;
  RETURN_IF_ERROR(Find(vm_id, "Info", &e, &p));
  VmInfo info;
  info.process_alive = p->alive;
  if (p->alive) {
    info.state = p->state;
    info.vmm_status = std::string(model::StateName(p->state));
  } else {
    info.exit = p->exit.value_or(process::ExitInfo{});
    info.state = info.exit->clean() ? VmState::kStopped : VmState::kFailed;
    info.vmm_status = "exited";
  }
  return info;
}

std::vector<std::string> FakeBackend::List() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> ids;
  for (const auto& [id, e] : vms_) ids.push_back(id);
  return ids;
}

base::Result<model::UsageSample> FakeBackend::Metrics(std::string_view vm_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry* e = nullptr;
  Proc* p = nullptr;
  RETURN_IF_ERROR(Find(vm_id, "Metrics", &e, &p));
  if (!p->alive) return base::UnavailableError("Metrics " + std::string(vm_id) + ": VMM exited");
  model::UsageSample s;
  s.vm_id = std::string(vm_id);
  return s;
}

base::Status FakeBackend::HealthCheck() {
  std::lock_guard<std::mutex> lock(mu_);
  return options_.health;
}

base::Result<VmHandle> FakeBackend::Adopt(const VmHandle& stored) {
  RETURN_IF_ERROR(Enter(Op::kAdopt, stored.vm_id));
  std::string ctx = "Adopt " + stored.vm_id;
  if (stored.vm_id.empty() || stored.vm_dir.empty()) {
    return base::InvalidArgumentError(ctx + ": handle lacks vm_id or vm_dir");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (vms_.count(stored.vm_id)) return base::AlreadyExistsError(ctx + ": already registered");
  auto it = procs_.find(stored.process.start_time);
  if (it == procs_.end() || it->second.pid != stored.process.pid) {
    // Not a process we know (or a reused pid): registered as gone, exit unknown.
    Proc gone;
    gone.pid = stored.process.pid;
    gone.alive = false;
    gone.exit = process::ExitInfo{};
    gone.state = VmState::kFailed;
    procs_[stored.process.start_time] = gone;
  }
  Entry e;
  e.handle = stored;
  e.adopted = true;
  vms_[stored.vm_id] = std::move(e);
  return stored;
}

base::Status FakeBackend::SimulateGuestPoweroff(std::string_view vm_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry* e = nullptr;
  Proc* p = nullptr;
  RETURN_IF_ERROR(Find(vm_id, "SimulateGuestPoweroff", &e, &p));
  p->alive = false;
  p->exit = process::ExitInfo{true, 0, 0};
  p->state = VmState::kStopped;
  return base::OkStatus();
}

base::Status FakeBackend::SimulateCrash(std::string_view vm_id, int signal) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry* e = nullptr;
  Proc* p = nullptr;
  RETURN_IF_ERROR(Find(vm_id, "SimulateCrash", &e, &p));
  p->alive = false;
  p->exit = signal != 0 ? process::ExitInfo{true, -1, signal} : process::ExitInfo{};
  p->state = VmState::kFailed;
  return base::OkStatus();
}

void FakeBackend::SimulateDaemonRestart() {
  std::lock_guard<std::mutex> lock(mu_);
  vms_.clear();
  // An adopted process's exit status goes to its new parent: it is unknown after a restart.
  for (auto& [start, p] : procs_) {
    if (!p.alive) p.exit = process::ExitInfo{};
  }
}

std::optional<FakeBackend::FakeVm> FakeBackend::Get(std::string_view vm_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = vms_.find(vm_id);
  if (it == vms_.end()) return std::nullopt;
  FakeVm v;
  v.handle = it->second.handle;
  v.last_create = it->second.last_create;
  v.adopted = it->second.adopted;
  auto p = procs_.find(it->second.handle.process.start_time);
  if (p != procs_.end()) {
    v.state = p->second.state;
    v.alive = p->second.alive;
    v.exit = p->second.exit;
  }
  return v;
}

bool FakeBackend::Has(std::string_view vm_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return vms_.find(vm_id) != vms_.end();
}

int FakeBackend::calls(Op op) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = calls_.find(op);
  return it == calls_.end() ? 0 : it->second;
}

int FakeBackend::live_processes() const {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  for (const auto& [start, p] : procs_) n += p.alive ? 1 : 0;
  return n;
}

}  // namespace metald::backend::testing

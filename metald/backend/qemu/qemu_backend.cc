#include "metald/backend/qemu/qemu_backend.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "metald/backend/common/host_tsc.h"
#include "metald/backend/common/kvm_probe.h"
#include "metald/backend/qemu/qmp.h"
#include "metald/process/jail.h"
#include "metald/process/jail_elf.h"

namespace metald::backend::qemu {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr size_t kMaxUnixPath = 107;
// Where a jailed QEMU sees the VM directory.
constexpr const char* kRunDir = "/run/vm";

std::string FindInPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::stringstream ss(dirs);
  for (std::string dir; std::getline(ss, dir, ':');) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// The last `max` bytes of a file, for error messages about a QEMU that failed to start.
std::string Tail(const std::string& path, size_t max = 400) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() > max) s = "..." + s.substr(s.size() - max);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

uint64_t ReadCounter(const std::string& path) {
  std::ifstream in(path);
  uint64_t v = 0;
  in >> v;
  return in ? v : 0;
}

int64_t NowUnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One registered VM.
struct Vm {
  // Constant after registration.
  VmHandle handle;

  // Serialises use of `qmp` and the lifecycle steps (QEMU serves one QMP client at a time).
  std::mutex mu;
  std::unique_ptr<QmpClient> qmp;  // Guarded by mu; null or broken = reconnect on next use.
  bool guest_shutdown = false;     // Guarded by mu: a SHUTDOWN event with guest=true was seen.

  // Guarded by cache_mu: values Info/Metrics report when `mu` is busy.
  std::mutex cache_mu;
  std::string last_status;                // Last query-status answer.
  std::optional<process::ExitInfo> exit;  // Set once the process is known gone.
  uint64_t disk_read_bytes = 0;
  uint64_t disk_write_bytes = 0;
};

class QemuBackend final : public Backend {
 public:
  QemuBackend(QemuOptions options, process::ProcessSpawner* spawner)
      : options_(std::move(options)), spawner_(spawner) {
    if (options_.binary.empty()) options_.binary = FindInPath("qemu-system-x86_64");
  }

  ~QemuBackend() override = default;

  model::BackendKind kind() const override { return model::BackendKind::kQemu; }

  base::Result<VmHandle> Create(const CreateRequest& req) override {
    std::string ctx = "Create " + req.vm_id;
    base::Result<VmHandle> r = CreateImpl(req);
    if (!r.ok()) return r.status().WithContext(ctx);
    return r;
  }

  base::Status Boot(std::string_view vm_id) override {
    return Transition(vm_id, "Boot", {"prelaunch"}, "cont", "running");
  }

  base::Status Pause(std::string_view vm_id) override {
    return Transition(vm_id, "Pause", {"running"}, "stop", "paused");
  }

  base::Status Resume(std::string_view vm_id) override {
    return Transition(vm_id, "Resume", {"paused"}, "cont", "running");
  }

  base::Status Reboot(std::string_view vm_id) override {
    return Transition(vm_id, "Reboot", {"running"}, "system_reset", "running");
  }

  base::Result<ShutdownResult> Shutdown(std::string_view vm_id,
                                        const ShutdownRequest& request) override {
    std::string ctx = "Shutdown " + std::string(vm_id);
    base::Result<std::shared_ptr<Vm>> vm = Lookup(vm_id);
    if (!vm.ok()) return vm.status().WithContext(ctx);
    std::lock_guard<std::mutex> lock((*vm)->mu);
    base::Result<ShutdownResult> r = ShutdownLocked(**vm, request);
    if (!r.ok()) return r.status().WithContext(ctx);
    return r;
  }

  base::Status Delete(std::string_view vm_id) override {
    std::string ctx = "Delete " + std::string(vm_id);
    base::Result<std::shared_ptr<Vm>> found = Lookup(vm_id);
    if (!found.ok()) return found.status().WithContext(ctx);
    Vm& vm = **found;
    {
      std::lock_guard<std::mutex> lock(vm.mu);
      vm.qmp.reset();
      base::Result<process::ExitInfo> exit =
          spawner_->Kill(vm.handle.process, options_.kill_timeout);
      if (!exit.ok()) return exit.status().WithContext(ctx + ": kill VMM");
      // The jail first: it bind-mounts vm_dir. Idempotent, so also right for an unjailed VM.
      if (!options_.jail_base.empty()) {
        base::Status removed = process::RemoveJail(options_.jail_base, vm.handle.vm_id);
        if (!removed.ok()) return removed.WithContext(ctx);
      }
      std::error_code ec;
      if (!vm.handle.console_log.empty()) fs::remove(vm.handle.console_log, ec);
      fs::remove_all(vm.handle.vm_dir, ec);
      if (ec) {
        return base::InternalError(ctx + ": remove " + vm.handle.vm_dir + ": " + ec.message());
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    vms_.erase(std::string(vm_id));
    return base::OkStatus();
  }

  base::Result<VmInfo> Info(std::string_view vm_id) override {
    base::Result<std::shared_ptr<Vm>> found = Lookup(vm_id);
    if (!found.ok()) return found.status().WithContext("Info " + std::string(vm_id));
    Vm& vm = **found;
    VmInfo info;
    info.process_alive = spawner_->IsAlive(vm.handle.process);
    if (info.process_alive) {
      std::unique_lock<std::mutex> lock(vm.mu, std::try_to_lock);
      if (lock.owns_lock()) (void)QueryStatus(vm);  // Refreshes last_status.
    }
    bool guest_shutdown = false;
    if (!info.process_alive) {
      process::ExitInfo exit = RecordExit(vm);
      std::unique_lock<std::mutex> lock(vm.mu, std::try_to_lock);
      guest_shutdown = lock.owns_lock() && vm.guest_shutdown;
      info.exit = exit;
    }
    std::lock_guard<std::mutex> cache(vm.cache_mu);
    info.vmm_status = vm.last_status;
    if (info.process_alive) {
      info.state =
          vm.last_status.empty() ? model::VmState::kCreated : StateFromQmpStatus(vm.last_status);
    } else if (info.exit->clean() || (!info.exit->known && guest_shutdown)) {
      info.state = model::VmState::kStopped;
      info.vmm_status = "exited";
    } else {
      info.state = model::VmState::kFailed;
      info.vmm_status = "exited";
    }
    return info;
  }

  std::vector<std::string> List() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> ids;
    for (const auto& [id, vm] : vms_) ids.push_back(id);
    return ids;  // std::map: sorted.
  }

  base::Result<model::UsageSample> Metrics(std::string_view vm_id) override {
    std::string ctx = "Metrics " + std::string(vm_id);
    base::Result<std::shared_ptr<Vm>> found = Lookup(vm_id);
    if (!found.ok()) return found.status().WithContext(ctx);
    Vm& vm = **found;
    base::Result<process::ProcessUsage> usage = spawner_->Usage(vm.handle.process);
    if (!usage.ok()) return usage.status().WithContext(ctx);
    model::UsageSample s;
    s.vm_id = vm.handle.vm_id;
    s.timestamp_unix_ns = NowUnixNs();
    s.cpu_time_ns = usage->cpu_time_ns;
    s.memory_bytes = usage->rss_bytes;
    // The host side of a TAP counts the other way round: what the guest sent is the TAP's rx.
    for (const std::string& tap : vm.handle.tap_devices) {
      std::string base = "/sys/class/net/" + tap + "/statistics/";
      s.net_rx_bytes += ReadCounter(base + "tx_bytes");
      s.net_tx_bytes += ReadCounter(base + "rx_bytes");
    }
    {
      std::unique_lock<std::mutex> lock(vm.mu, std::try_to_lock);
      if (lock.owns_lock()) RefreshBlockStats(vm);
    }
    std::lock_guard<std::mutex> cache(vm.cache_mu);
    s.disk_read_bytes = vm.disk_read_bytes;
    s.disk_write_bytes = vm.disk_write_bytes;
    return s;
  }

  base::Status HealthCheck() override {
    if (options_.binary.empty() || ::access(options_.binary.c_str(), X_OK) != 0) {
      return base::UnavailableError(
          "QEMU backend: qemu-system-x86_64 not found (install qemu-system-x86)");
    }
    Accelerator();
    return base::OkStatus();
  }

  base::Result<VmHandle> Adopt(const VmHandle& stored) override {
    std::string ctx = "Adopt " + stored.vm_id;
    if (stored.vm_id.empty() || stored.vm_dir.empty()) {
      return base::InvalidArgumentError(ctx + ": handle lacks vm_id or vm_dir");
    }
    auto vm = std::make_shared<Vm>();
    vm->handle = stored;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (vms_.count(stored.vm_id)) return base::AlreadyExistsError(ctx + ": already registered");
      vms_[stored.vm_id] = vm;
    }
    std::lock_guard<std::mutex> lock(vm->mu);
    if (spawner_->IsAlive(stored.process)) {
      // A failure here is not fatal: the next call reconnects.
      (void)QueryStatus(*vm);
    } else {
      RecordExit(*vm);
    }
    return stored;
  }

 private:
  base::Result<std::shared_ptr<Vm>> Lookup(std::string_view vm_id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = vms_.find(std::string(vm_id));
    if (it == vms_.end()) return base::NotFoundError("VM is not registered with the QEMU backend");
    return it->second;
  }

  bool Accelerator() {
    std::call_once(accel_once_, [this] {
      accel_ = ChooseAccel(options_, spawner_);
      if (!accel_.kvm) tsc_khz_ = common::HostTscKhz();
    });
    return accel_.kvm;
  }

  base::Result<VmHandle> CreateImpl(const CreateRequest& req) {
    if (req.vm_id.empty()) return base::InvalidArgumentError("vm_id is empty");
    if (req.vm_dir.empty() || req.vm_dir[0] != '/') {
      return base::InvalidArgumentError("vm_dir must be an absolute path");
    }
    if (options_.binary.empty()) {
      return base::UnavailableError("qemu-system-x86_64 not found (install qemu-system-x86)");
    }
    VmHandle handle;
    handle.vm_id = req.vm_id;
    handle.kind = model::BackendKind::kQemu;
    handle.vm_dir = req.vm_dir;
    handle.api_socket = req.vm_dir + "/qmp.sock";
    handle.console_log =
        req.spec.console.log_file.empty() ? req.vm_dir + "/console.log" : req.spec.console.log_file;
    handle.tap_devices = req.tap_devices;
    if (handle.api_socket.size() > kMaxUnixPath) {
      return base::InvalidArgumentError("QMP socket path " + handle.api_socket + " exceeds " +
                                        std::to_string(kMaxUnixPath) + " bytes");
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = vms_.find(req.vm_id);
      if (it != vms_.end()) {
        if (spawner_->IsAlive(it->second->handle.process)) {
          return base::AlreadyExistsError("the VM's QEMU process is running");
        }
        vms_.erase(it);  // Its process has exited: this Create replaces it.
      }
    }

    QemuLaunch launch;
    launch.binary = options_.binary;
    launch.vm_id = req.vm_id;
    launch.kvm = Accelerator();
    launch.tsc_khz = tsc_khz_;
    launch.base_kernel_args = options_.base_kernel_args;
    launch.spec = req.spec;
    launch.qmp_socket = handle.api_socket;
    launch.console_log = handle.console_log;
    launch.tap_devices = req.tap_devices;
    // Catches a spec QEMU cannot run before any jail is built (it is built again below with the
    // in-jail paths).
    ASSIGN_OR_RETURN(std::vector<std::string> argv, BuildQemuArgs(launch));

    std::error_code ec;
    fs::create_directories(req.vm_dir, ec);
    if (ec) return base::InternalError("mkdir " + req.vm_dir + ": " + ec.message());
    fs::remove(handle.api_socket, ec);  // A stale socket from an earlier process.

    process::SpawnSpec spawn;
    spawn.cwd = req.vm_dir;
    spawn.output_file = req.vm_dir + "/qemu.log";
    spawn.netns_path = req.netns_path;
    bool jailed = false;
    if (req.jail) {
      RETURN_IF_ERROR(PrepareVmJail(req, handle, &launch, &spawn));
      jailed = true;
      base::Result<std::vector<std::string>> jailed_argv = BuildQemuArgs(launch);
      if (!jailed_argv.ok()) {
        (void)process::RemoveJail(options_.jail_base, req.vm_id);
        return jailed_argv.status();
      }
      argv = std::move(*jailed_argv);
    }
    spawn.argv = std::move(argv);
    base::Result<process::ProcessId> spawned = spawner_->Spawn(spawn);
    if (!spawned.ok()) {
      if (jailed) (void)process::RemoveJail(options_.jail_base, req.vm_id);
      return spawned.status();
    }
    handle.process = *spawned;

    auto vm = std::make_shared<Vm>();
    vm->handle = handle;
    base::Status st = WaitForQmp(*vm, spawn.output_file);
    if (st.ok()) {
      base::Result<std::string> status = QueryStatus(*vm);
      if (!status.ok()) {
        st = status.status();
      } else if (*status != "prelaunch") {
        st = base::InternalError("QEMU reports status \"" + *status + "\", expected prelaunch");
      }
    }
    if (!st.ok()) {
      vm->qmp.reset();
      (void)spawner_->Kill(handle.process, options_.kill_timeout);
      if (jailed) (void)process::RemoveJail(options_.jail_base, req.vm_id);
      return st;
    }
    std::lock_guard<std::mutex> lock(mu_);
    vms_[req.vm_id] = vm;
    return handle;
  }

  // Builds the VM's jail (QemuOptions::jail_base) and rewrites `launch` to the in-jail paths and
  // `spawn` to run jailed. On error nothing of the jail remains.
  base::Status PrepareVmJail(const CreateRequest& req, const VmHandle& handle, QemuLaunch* launch,
                             process::SpawnSpec* spawn) {
    if (options_.jail_base.empty()) {
      return base::FailedPreconditionError("a jailed VM needs QemuOptions::jail_base");
    }
    const VmJail& j = *req.jail;
    if (j.uid == 0 || j.gid == 0) {
      return base::InvalidArgumentError("a jailed VM must not run as uid or gid 0");
    }
    // The VM directory appears inside the jail at kRunDir; so must the files QEMU writes.
    const std::string prefix = req.vm_dir + "/";
    for (const std::string* p : {&handle.api_socket, &handle.console_log}) {
      if (p->rfind(prefix, 0) != 0) {
        return base::InvalidArgumentError("a jailed VM's " + *p + " must be inside " + req.vm_dir);
      }
    }
    // Leftovers of an earlier incarnation (its process has exited) or of a crash.
    RETURN_IF_ERROR(process::RemoveJail(options_.jail_base, req.vm_id));
    if (::chown(req.vm_dir.c_str(), j.uid, j.gid) < 0 || ::chmod(req.vm_dir.c_str(), 0700) < 0) {
      return base::InternalError("chown " + req.vm_dir + ": " + std::strerror(errno));
    }

    process::JailLayout layout;
    layout.base = options_.jail_base;
    layout.vm_id = req.vm_id;
    layout.uid = j.uid;
    layout.gid = j.gid;
    ASSIGN_OR_RETURN(layout.files, QemuFiles(launch->kvm));
    auto add = [&layout](const std::string& source, std::string target, bool writable) {
      layout.files.push_back({source, target, writable});
      return target;
    };
    model::BootSpec& boot = launch->spec.boot;
    boot.kernel_path = add(boot.kernel_path, "/vm/kernel", false);
    if (!boot.initrd_path.empty()) boot.initrd_path = add(boot.initrd_path, "/vm/initrd", false);
    for (size_t i = 0; i < launch->spec.storage.size(); ++i) {
      model::StorageSpec& d = launch->spec.storage[i];
      d.path = add(d.path, "/vm/drive" + std::to_string(i), !d.read_only);
    }
    layout.dirs = {{req.vm_dir, kRunDir, true}};
    layout.devices = process::StandardJailDevices(!req.tap_devices.empty(), launch->kvm);
    ASSIGN_OR_RETURN(
        process::PreparedJail jail,
        process::PrepareJail(
            layout, options_.jail_ops != nullptr ? options_.jail_ops : process::SystemJailOps()));

    launch->qmp_socket = std::string(kRunDir) + "/" + handle.api_socket.substr(prefix.size());
    launch->console_log = std::string(kRunDir) + "/" + handle.console_log.substr(prefix.size());
    launch->firmware_dir = options_.firmware_dir;
    spawn->cwd = kRunDir;
    process::JailSpec js;
    js.root = jail.root;
    js.uid = j.uid;
    js.gid = j.gid;
    js.cgroup_procs_files = j.cgroup_procs_files;
    js.rlimits = options_.jail_rlimits;
    js.new_pid_namespace = options_.jail_new_pid_namespace;
    spawn->jail = std::move(js);
    return base::OkStatus();
  }

  // What every jailed QEMU needs (binary, loader, libraries, TCG module, firmware), computed once
  // per accelerator.
  base::Result<std::vector<process::JailFile>> QemuFiles(bool kvm) {
    std::lock_guard<std::mutex> lock(files_mu_);
    std::optional<std::vector<process::JailFile>>& cached = kvm ? kvm_files_ : tcg_files_;
    if (cached) return *cached;
    std::vector<std::string> elfs = {options_.binary};
    std::string tcg = options_.module_dir + "/accel-tcg-x86_64.so";
    if (!kvm && ::access(tcg.c_str(), R_OK) == 0) elfs.push_back(tcg);
    std::vector<process::JailFile> files;
    std::set<std::string> seen;
    auto add = [&](const std::string& path) {
      if (seen.insert(path).second) files.push_back({path, path, false});
    };
    for (const std::string& elf : elfs) {
      add(elf);
      ASSIGN_OR_RETURN(std::vector<std::string> objs, process::SharedObjects(elf, spawner_));
      for (const std::string& o : objs) add(o);
    }
    // microvm's firmware (bios-microvm.bin, a link to qboot.rom) and the option ROMs -kernel uses.
    for (const char* fw : {"bios-microvm.bin", "qboot.rom", "linuxboot_dma.bin", "linuxboot.bin",
                           "pvh.bin", "kvmvapic.bin"}) {
      std::string path = options_.firmware_dir + "/" + fw;
      if (::access(path.c_str(), R_OK) == 0) add(path);
    }
    cached = files;
    return files;
  }

  // Connects to the new QEMU's QMP socket, retrying until it listens. REQUIRES: vm.mu not shared
  // yet (vm is not registered).
  base::Status WaitForQmp(Vm& vm, const std::string& qemu_log) {
    Clock::time_point deadline = Clock::now() + options_.start_timeout;
    for (;;) {
      if (!spawner_->IsAlive(vm.handle.process)) {
        base::Result<process::ExitInfo> exit =
            spawner_->WaitForExit(vm.handle.process, milliseconds(0));
        return base::InternalError("QEMU exited at start (" +
                                   (exit.ok() ? process::ToString(*exit) : "status unknown") +
                                   "): " + Tail(qemu_log));
      }
      base::Status st = Connect(vm);
      if (st.ok()) return st;
      if (st.code() != base::StatusCode::kUnavailable || Clock::now() >= deadline) {
        if (st.code() == base::StatusCode::kUnavailable) {
          return base::DeadlineExceededError("QMP socket did not answer within " +
                                             std::to_string(options_.start_timeout.count()) +
                                             " ms: " + st.message());
        }
        return st;
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
  }

  // (Re)connects vm.qmp and negotiates. REQUIRES: vm.mu held.
  base::Status Connect(Vm& vm) {
    QmpClient::Options qo;
    qo.timeout = options_.qmp_timeout;
    base::Result<std::unique_ptr<QmpClient>> client = QmpClient::Connect(vm.handle.api_socket, qo);
    if (!client.ok()) return client.status();
    base::Result<json> version = (*client)->Handshake();
    if (!version.ok()) return version.status();
    vm.qmp = std::move(*client);
    return base::OkStatus();
  }

  // The QMP client, reconnected if needed. REQUIRES: vm.mu held.
  base::Result<QmpClient*> Qmp(Vm& vm) {
    if (!vm.qmp || vm.qmp->broken()) {
      vm.qmp.reset();
      if (!spawner_->IsAlive(vm.handle.process)) {
        process::ExitInfo exit = RecordExit(vm);
        return base::FailedPreconditionError("the QEMU process has exited (" +
                                             process::ToString(exit) + ")");
      }
      RETURN_IF_ERROR(Connect(vm));
    }
    return vm.qmp.get();
  }

  // Runs a QMP command and notes guest-initiated shutdowns among the events it saw.
  // REQUIRES: vm.mu held.
  base::Result<json> Execute(Vm& vm, std::string_view command, const json& args = nullptr) {
    ASSIGN_OR_RETURN(QmpClient * qmp, Qmp(vm));
    base::Result<json> r = qmp->Execute(command, args);
    for (const QmpEvent& e : qmp->TakeEvents()) {
      if (e.name == "SHUTDOWN" && e.data.is_object() && e.data.value("guest", false)) {
        vm.guest_shutdown = true;
      }
    }
    if (!r.ok() && qmp->broken() && !spawner_->IsAlive(vm.handle.process)) {
      process::ExitInfo exit = RecordExit(vm);
      return base::FailedPreconditionError("the QEMU process has exited (" +
                                           process::ToString(exit) + ")");
    }
    return r;
  }

  // query-status; caches the answer. REQUIRES: vm.mu held.
  base::Result<std::string> QueryStatus(Vm& vm) {
    ASSIGN_OR_RETURN(json r, Execute(vm, "query-status"));
    auto it = r.find("status");
    if (it == r.end() || !it->is_string()) {
      return base::InternalError("QMP query-status: reply has no status");
    }
    std::string status = it->get<std::string>();
    std::lock_guard<std::mutex> cache(vm.cache_mu);
    vm.last_status = status;
    return status;
  }

  // Checks the VMM is in one of `from`, runs `command`, and checks it reached `to`.
  base::Status Transition(std::string_view vm_id, std::string_view op,
                          std::initializer_list<std::string_view> from, std::string_view command,
                          std::string_view to) {
    std::string ctx = std::string(op) + " " + std::string(vm_id);
    base::Result<std::shared_ptr<Vm>> found = Lookup(vm_id);
    if (!found.ok()) return found.status().WithContext(ctx);
    Vm& vm = **found;
    std::lock_guard<std::mutex> lock(vm.mu);
    base::Result<std::string> status = QueryStatus(vm);
    if (!status.ok()) return status.status().WithContext(ctx);
    if (std::find(from.begin(), from.end(), *status) == from.end()) {
      return base::FailedPreconditionError(ctx + ": QEMU status is \"" + *status + "\"");
    }
    base::Result<json> r = Execute(vm, command);
    if (!r.ok()) return r.status().WithContext(ctx);
    status = QueryStatus(vm);
    if (!status.ok()) return status.status().WithContext(ctx);
    if (*status != to) {
      return base::InternalError(ctx + ": QEMU status is \"" + *status + "\" after " +
                                 std::string(command) + ", expected \"" + std::string(to) + "\"");
    }
    return base::OkStatus();
  }

  // REQUIRES: vm.mu held.
  base::Result<ShutdownResult> ShutdownLocked(Vm& vm, const ShutdownRequest& request) {
    ShutdownResult result;
    const process::ProcessId& pid = vm.handle.process;
    if (!spawner_->IsAlive(pid)) {
      result.exit = RecordExit(vm);
      return result;
    }
    if (request.graceful) {
      base::Result<std::string> status = QueryStatus(vm);
      bool can_ask = status.ok() && *status != "prelaunch";
      // A paused guest cannot see the power button: let it run first.
      if (can_ask && *status != "running") can_ask = Execute(vm, "cont").ok();
      if (can_ask && Execute(vm, "system_powerdown").ok()) {
        base::Result<process::ExitInfo> exit = spawner_->WaitForExit(pid, request.timeout);
        if (exit.ok()) {
          result.graceful = true;
          result.exit = RecordExit(vm, *exit);
          vm.qmp.reset();
          return result;
        }
        if (exit.status().code() != base::StatusCode::kDeadlineExceeded) return exit.status();
      }
    }
    // Forced: quit lets QEMU flush and exit cleanly; SIGKILL if even that hangs.
    if (spawner_->IsAlive(pid)) {
      base::Result<QmpClient*> qmp = Qmp(vm);
      if (qmp.ok()) (void)(*qmp)->Execute("quit", nullptr, options_.quit_timeout);
      base::Result<process::ExitInfo> exit = spawner_->WaitForExit(pid, options_.quit_timeout);
      if (!exit.ok()) exit = spawner_->Kill(pid, options_.kill_timeout);
      if (!exit.ok()) return exit.status().WithContext("kill VMM");
      result.exit = RecordExit(vm, *exit);
    } else {
      result.exit = RecordExit(vm);
    }
    vm.qmp.reset();
    return result;
  }

  // Records (once) and returns how the process ended. `known` overrides a lookup.
  process::ExitInfo RecordExit(Vm& vm, std::optional<process::ExitInfo> known = std::nullopt) {
    std::lock_guard<std::mutex> cache(vm.cache_mu);
    if (vm.exit) return *vm.exit;
    if (!known) {
      base::Result<process::ExitInfo> exit =
          spawner_->WaitForExit(vm.handle.process, milliseconds(0));
      if (!exit.ok()) return process::ExitInfo{};  // Still alive after all: record nothing.
      known = *exit;
    }
    vm.exit = known;
    return *known;
  }

  // query-blockstats: sums rd_bytes / wr_bytes of every drive. REQUIRES: vm.mu held.
  void RefreshBlockStats(Vm& vm) {
    if (!vm.qmp || vm.qmp->broken()) return;  // No reconnects from the sampling path.
    base::Result<json> r = vm.qmp->Execute("query-blockstats", nullptr, milliseconds(1000));
    if (!r.ok() || !r->is_array()) return;
    uint64_t rd = 0, wr = 0;
    for (const json& dev : *r) {
      auto stats = dev.find("stats");
      if (stats == dev.end() || !stats->is_object()) continue;
      rd += stats->value("rd_bytes", uint64_t{0});
      wr += stats->value("wr_bytes", uint64_t{0});
    }
    std::lock_guard<std::mutex> cache(vm.cache_mu);
    vm.disk_read_bytes = rd;
    vm.disk_write_bytes = wr;
  }

  QemuOptions options_;  // Constant after construction.
  process::ProcessSpawner* const spawner_;

  std::once_flag accel_once_;
  AccelChoice accel_;     // Written once under accel_once_.
  uint64_t tsc_khz_ = 0;  // Written once under accel_once_.

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Vm>> vms_;  // Guarded by mu_.

  std::mutex files_mu_;
  // Guarded by files_mu_: QemuFiles results.
  std::optional<std::vector<process::JailFile>> kvm_files_;
  std::optional<std::vector<process::JailFile>> tcg_files_;
};

// Boots options.probe_kernel under KVM and waits for the readiness line.
AccelChoice ProbeKvmBoot(const QemuOptions& options, process::ProcessSpawner* spawner) {
  char tmpl[] = "/tmp/metald-kvm-probe.XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return {false, "cannot make a temp dir for the KVM boot probe"};
  std::string dir = tmpl;
  std::string console = dir + "/console.log";
  process::SpawnSpec spec;
  spec.argv = {options.binary,
               "-M",
               "microvm,pit=on,rtc=on,acpi=on",
               "-accel",
               "kvm",
               "-cpu",
               "host",
               "-nodefaults",
               "-no-user-config",
               "-nographic",
               "-no-reboot",
               "-m",
               "128M",
               "-smp",
               "1",
               "-serial",
               "file:" + console,
               "-kernel",
               options.probe_kernel,
               "-append",
               "console=ttyS0 panic=-1 quiet"};
  if (!options.probe_initrd.empty()) {
    spec.argv.push_back("-initrd");
    spec.argv.push_back(options.probe_initrd);
  }
  spec.output_file = dir + "/qemu.log";
  AccelChoice choice{false, "no readiness line from a KVM guest within " +
                                std::to_string(options.probe_timeout.count()) + " ms"};
  base::Result<process::ProcessId> pid = spawner->Spawn(spec);
  if (!pid.ok()) {
    choice.reason = "cannot start the KVM boot probe: " + pid.status().message();
  } else {
    Clock::time_point deadline = Clock::now() + options.probe_timeout;
    while (Clock::now() < deadline) {
      if (Tail(console, 1 << 20).find(options.probe_ready_line) != std::string::npos) {
        choice = {true, "a KVM guest booted"};
        break;
      }
      if (!spawner->IsAlive(*pid)) {
        choice.reason = "QEMU with -accel kvm exited: " + Tail(dir + "/qemu.log", 200);
        break;
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
    (void)spawner->Kill(*pid, milliseconds(10'000));
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return choice;
}

}  // namespace

AccelChoice ChooseAccel(const QemuOptions& options, process::ProcessSpawner* spawner) {
  switch (options.accel) {
    case Accel::kKvm:
      return {true, "configured"};
    case Accel::kTcg:
      return {false, "configured"};
    case Accel::kAuto:
      break;
  }
  common::KvmProbeResult probe = common::ProbeKvm(options.kvm_device);
  if (!probe.usable) return {false, "KVM unusable: " + probe.reason};
  if (options.probe_kernel.empty() || options.binary.empty()) return {true, probe.reason};
  AccelChoice boot = ProbeKvmBoot(options, spawner);
  if (!boot.kvm) boot.reason = "KVM unusable: " + boot.reason;
  return boot;
}

std::unique_ptr<Backend> NewQemuBackend(QemuOptions options, process::ProcessSpawner* spawner) {
  return std::make_unique<QemuBackend>(std::move(options), spawner);
}

}  // namespace metald::backend::qemu

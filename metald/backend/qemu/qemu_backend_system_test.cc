// System test (label "system"): drives a real qemu-system-x86_64 with the project's test guest
// (tools/build-guest-image.sh) through the whole lifecycle. Needs qemu-system-x86_64 (skipped
// without it) and the guest image in METALD_GUEST_DIR (built here if missing; needs root).
// Every QEMU started here is killed on every exit path (Reaper).

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "metald/backend/qemu/qemu_backend.h"
#include "metald/process/jail.h"
#include "metald/process/proc_stat.h"
#include "metald/process/process.h"

#ifndef METALD_GUEST_DIR
#error "METALD_GUEST_DIR must be defined by the build"
#endif
#ifndef METALD_SOURCE_DIR
#error "METALD_SOURCE_DIR must be defined by the build"
#endif

namespace metald::backend::qemu {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Generous: a loaded 2-core TCG host took 17-27 s to READY (docs/guest-image.md).
constexpr milliseconds kBootWait(180'000);

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos;
       pos = text.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

// Waits until `path` holds `needle` at least `times` times.
bool WaitForConsole(const std::string& path, const std::string& needle, size_t times,
                    milliseconds timeout = kBootWait) {
  Clock::time_point deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (Count(ReadFile(path), needle) >= times) return true;
    std::this_thread::sleep_for(milliseconds(200));
  }
  return false;
}

// Kills every registered process when the test ends, however it ends.
class Reaper {
 public:
  explicit Reaper(process::ProcessSpawner* spawner) : spawner_(spawner) {}
  ~Reaper() {
    for (const process::ProcessId& id : ids_) (void)spawner_->Kill(id, milliseconds(10'000));
  }
  void Add(const process::ProcessId& id) { ids_.push_back(id); }

 private:
  process::ProcessSpawner* spawner_;
  std::vector<process::ProcessId> ids_;
};

class QemuSystemTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.binary.clear();
    const char* path = std::getenv("PATH");
    std::stringstream ss(path ? path : "/usr/bin:/bin");
    for (std::string dir; std::getline(ss, dir, ':');) {
      if (!dir.empty() && ::access((dir + "/qemu-system-x86_64").c_str(), X_OK) == 0) {
        options_.binary = dir + "/qemu-system-x86_64";
        break;
      }
    }
    if (options_.binary.empty()) {
      GTEST_SKIP() << "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)";
    }
    guest_ = METALD_GUEST_DIR;
    if (!fs::exists(guest_ + "/vmlinuz") || !fs::exists(guest_ + "/initrd.img")) {
      std::string cmd = "bash " + std::string(METALD_SOURCE_DIR) + "/tools/build-guest-image.sh " +
                        guest_ + " >&2";
      ASSERT_EQ(std::system(cmd.c_str()), 0) << "building the guest image failed: " << cmd;
    }
    // KVM only if it boots this very guest (nested hosts can pass the ioctl probe and still fail).
    options_.probe_kernel = guest_ + "/vmlinuz";
    options_.probe_initrd = guest_ + "/initrd.img";
    char tmpl[] = "/tmp/metald-qemu.XXXXXX";  // Short: the QMP socket path must fit 107 bytes.
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
    spawner_ = process::NewSystemSpawner();
    reaper_ = std::make_unique<Reaper>(spawner_.get());
  }

  void TearDown() override {
    reaper_.reset();
    if (!tmp_.empty()) fs::remove_all(tmp_);
  }

  CreateRequest MakeRequest(const std::string& vm_id) {
    CreateRequest req;
    req.vm_id = vm_id;
    req.vm_dir = tmp_ + "/" + vm_id;
    req.spec.cpu.vcpu_count = 1;
    req.spec.memory.size_bytes = 256ull << 20;
    req.spec.boot.kernel_path = guest_ + "/vmlinuz";
    req.spec.boot.initrd_path = guest_ + "/initrd.img";
    req.spec.boot.kernel_args = "quiet";
    return req;
  }

  QemuOptions options_;
  std::string guest_;
  std::string tmp_;
  std::unique_ptr<process::ProcessSpawner> spawner_;
  std::unique_ptr<Reaper> reaper_;
};

TEST_F(QemuSystemTest, FullLifecycle) {
  std::unique_ptr<Backend> backend = NewQemuBackend(options_, spawner_.get());
  ASSERT_TRUE(backend->HealthCheck().ok());

  CreateRequest req = MakeRequest("vm-life");
  base::Result<VmHandle> created = backend->Create(req);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  VmHandle handle = *created;
  reaper_->Add(handle.process);
  EXPECT_TRUE(spawner_->IsAlive(handle.process));
  EXPECT_EQ(handle.api_socket, req.vm_dir + "/qmp.sock");
  base::Result<VmInfo> info = backend->Info("vm-life");
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->state, model::VmState::kCreated);
  EXPECT_EQ(info->vmm_status, "prelaunch");
  EXPECT_EQ(backend->List(), std::vector<std::string>{"vm-life"});
  // A second Create of a live VM is refused.
  EXPECT_EQ(backend->Create(req).status().code(), base::StatusCode::kAlreadyExists);
  // Pause before boot is a state error from QEMU's point of view.
  EXPECT_EQ(backend->Pause("vm-life").code(), base::StatusCode::kFailedPrecondition);

  // Boot: the guest prints its readiness line.
  ASSERT_TRUE(backend->Boot("vm-life").ok());
  ASSERT_TRUE(WaitForConsole(handle.console_log, "METALD-GUEST-READY", 1))
      << "console:\n"
      << ReadFile(handle.console_log);
  info = backend->Info("vm-life");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, model::VmState::kRunning);
  base::Result<model::UsageSample> usage = backend->Metrics("vm-life");
  ASSERT_TRUE(usage.ok()) << usage.status().ToString();
  EXPECT_EQ(usage->vm_id, "vm-life");
  EXPECT_GT(usage->cpu_time_ns, 0u);
  EXPECT_GT(usage->memory_bytes, 0u);
  EXPECT_GT(usage->timestamp_unix_ns, 0);

  // A metald restart: the first backend goes away, the QEMU process stays, a new backend adopts.
  backend.reset();
  ASSERT_TRUE(spawner_->IsAlive(handle.process));
  backend = NewQemuBackend(options_, spawner_.get());
  base::Result<VmHandle> adopted = backend->Adopt(handle);
  ASSERT_TRUE(adopted.ok()) << adopted.status().ToString();
  EXPECT_EQ(*adopted, handle);
  info = backend->Info("vm-life");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, model::VmState::kRunning);

  // Pause: QEMU reports paused and the guest writes nothing more.
  ASSERT_TRUE(backend->Pause("vm-life").ok());
  info = backend->Info("vm-life");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, model::VmState::kPaused);
  EXPECT_EQ(info->vmm_status, "paused");
  uintmax_t size_paused = fs::file_size(handle.console_log);
  std::this_thread::sleep_for(milliseconds(2500));
  EXPECT_EQ(fs::file_size(handle.console_log), size_paused);
  EXPECT_EQ(backend->Pause("vm-life").code(), base::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(backend->Resume("vm-life").ok());
  info = backend->Info("vm-life");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, model::VmState::kRunning);

  // Reboot in place: same process, the readiness line a second time.
  ASSERT_TRUE(backend->Reboot("vm-life").ok());
  ASSERT_TRUE(WaitForConsole(handle.console_log, "METALD-GUEST-READY", 2))
      << "console:\n"
      << ReadFile(handle.console_log);
  EXPECT_TRUE(spawner_->IsAlive(handle.process));

  // Graceful shutdown: the guest handles the power button and powers off; QEMU exits 0.
  ShutdownRequest shutdown;
  shutdown.graceful = true;
  shutdown.timeout = milliseconds(120'000);
  base::Result<ShutdownResult> down = backend->Shutdown("vm-life", shutdown);
  ASSERT_TRUE(down.ok()) << down.status().ToString();
  EXPECT_TRUE(down->graceful);
  EXPECT_FALSE(spawner_->IsAlive(handle.process));
  EXPECT_NE(ReadFile(handle.console_log).find("METALD-GUEST-POWEROFF"), std::string::npos);
  info = backend->Info("vm-life");
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->process_alive);
  EXPECT_EQ(info->state, model::VmState::kStopped);
  EXPECT_EQ(backend->Boot("vm-life").code(), base::StatusCode::kFailedPrecondition);

  // Delete: no process, no files, no registration.
  ASSERT_TRUE(backend->Delete("vm-life").ok());
  EXPECT_FALSE(fs::exists(req.vm_dir));
  EXPECT_TRUE(backend->List().empty());
  EXPECT_EQ(backend->Info("vm-life").status().code(), base::StatusCode::kNotFound);
}

TEST_F(QemuSystemTest, ForcedShutdownAndDeleteOfALiveVm) {
  std::unique_ptr<Backend> backend = NewQemuBackend(options_, spawner_.get());
  CreateRequest req = MakeRequest("vm-force");
  base::Result<VmHandle> created = backend->Create(req);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  reaper_->Add(created->process);
  ASSERT_TRUE(backend->Boot("vm-force").ok());
  ShutdownRequest forced;
  forced.graceful = false;
  base::Result<ShutdownResult> down = backend->Shutdown("vm-force", forced);
  ASSERT_TRUE(down.ok()) << down.status().ToString();
  EXPECT_FALSE(down->graceful);
  EXPECT_FALSE(spawner_->IsAlive(created->process));

  // Start again: Create replaces the exited process; then Delete kills the live one.
  base::Result<VmHandle> again = backend->Create(req);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  reaper_->Add(again->process);
  EXPECT_NE(again->process, created->process);
  ASSERT_TRUE(backend->Delete("vm-force").ok());
  EXPECT_FALSE(spawner_->IsAlive(again->process));
  EXPECT_FALSE(fs::exists(req.vm_dir));
}

TEST_F(QemuSystemTest, BadKernelFailsCreateAndLeavesNothingRunning) {
  std::unique_ptr<Backend> backend = NewQemuBackend(options_, spawner_.get());
  CreateRequest req = MakeRequest("vm-bad");
  req.spec.boot.kernel_path = tmp_ + "/no-such-kernel";
  base::Result<VmHandle> created = backend->Create(req);
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.status().message().find("Create vm-bad"), std::string::npos)
      << created.status().ToString();
  EXPECT_TRUE(backend->List().empty());
}

ino_t Inode(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

bool Shell(const std::string& cmd) { return std::system(cmd.c_str()) == 0; }

// Live processes whose real uid is `uid`.
int CountProcessesOfUid(uid_t uid) {
  int n = 0;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return -1;
  while (struct dirent* e = ::readdir(d)) {
    char* end;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::map<std::string, std::string> st = process::ReadProcStatusFields(static_cast<pid_t>(pid));
    if (st.count("Uid") && std::stoul(st["Uid"]) == uid && st["State"][0] != 'Z') ++n;
  }
  ::closedir(d);
  return n;
}

// The jailed QEMU (root only): chroot, fresh uid, no capabilities, its own network namespace with
// a TAP owned by the VM, its cgroup, a writable root disk; the guest boots and answers ping; Delete
// leaves no process, mount or file.
class QemuJailSystemTest : public QemuSystemTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (jail, netns, cgroups)";
    QemuSystemTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    tag_ = "metald-qj-" + std::to_string(::getpid());
    ASSERT_TRUE(Shell("ip netns add " + tag_));
    netns_ = "/run/netns/" + tag_;
    ASSERT_TRUE(Shell("ip -n " + tag_ + " tuntap add dev tap0 mode tap user " +
                      std::to_string(uid_) + " group " + std::to_string(uid_) + " && ip -n " +
                      tag_ + " addr add 10.77.0.1/24 dev tap0 && ip -n " + tag_ +
                      " link set tap0 up && ip -n " + tag_ + " link set lo up"));
    for (const char* parent : {"/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
      std::string dir = std::string(parent) + "/" + tag_;
      if (fs::exists(std::string(parent) + "/cgroup.procs") && ::mkdir(dir.c_str(), 0755) == 0) {
        cgroup_dir_ = dir;
        break;
      }
    }
    ASSERT_FALSE(cgroup_dir_.empty());
    options_.jail_base = tmp_ + "/jails";
    mounts_before_ = process::MountsUnder(tmp_);
  }

  void TearDown() override {
    QemuSystemTest::TearDown();
    if (!cgroup_dir_.empty()) ::rmdir(cgroup_dir_.c_str());
    if (!netns_.empty()) (void)Shell("ip netns delete " + tag_);
  }

  // Per test process, so concurrent runs never share a uid.
  const uid_t uid_ = static_cast<uid_t>(960000 + ::getpid() % 5000);
  std::string tag_;
  std::string netns_;
  std::string cgroup_dir_;
  std::vector<std::string> mounts_before_;
};

TEST_F(QemuJailSystemTest, JailedVmBootsAndLeavesNothing) {
  std::unique_ptr<Backend> backend = NewQemuBackend(options_, spawner_.get());
  CreateRequest req = MakeRequest("vm-jail");
  // A writable root disk the VM's uid owns (a per-VM copy, as the service would make).
  std::string disk = tmp_ + "/root.ext4";
  fs::copy_file(guest_ + "/rootfs.ext4", disk);
  ASSERT_EQ(::chown(disk.c_str(), uid_, uid_), 0);
  req.spec.storage = {{"root", disk, false, false}};
  req.spec.network = {{"eth0", "02:00:00:00:77:02", "", "", "", 0, 0}};
  req.spec.boot.kernel_args = "quiet metald.net=10.77.0.2/24,10.77.0.1 metald.root=/dev/vda";
  req.tap_devices = {"tap0"};
  req.netns_path = netns_;
  req.jail = VmJail{uid_, uid_, {cgroup_dir_ + "/cgroup.procs"}};

  base::Result<VmHandle> created = backend->Create(req);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  reaper_->Add(created->process);
  const pid_t pid = created->process.pid;
  const std::string proc = "/proc/" + std::to_string(pid);
  // Handle paths are the usual outside ones.
  EXPECT_EQ(created->api_socket, req.vm_dir + "/qmp.sock");

  std::map<std::string, std::string> st = process::ReadProcStatusFields(pid);
  const std::string u = std::to_string(uid_);
  EXPECT_EQ(st["Uid"], u + "\t" + u + "\t" + u + "\t" + u);
  EXPECT_EQ(st["Gid"], u + "\t" + u + "\t" + u + "\t" + u);
  for (const char* cap : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(st[cap], "0000000000000000") << cap;
  }
  EXPECT_EQ(st["NoNewPrivs"], "1");
  EXPECT_EQ(st["NSpid"], std::to_string(pid) + "\t1");  // Init of its own PID namespace.
  const std::string jail_root = options_.jail_base + "/vm-jail/root";
  EXPECT_EQ(fs::read_symlink(proc + "/root").string(), jail_root);
  EXPECT_EQ(Inode(proc + "/ns/net"), Inode(netns_));
  std::string procs = ReadFile(cgroup_dir_ + "/cgroup.procs");
  EXPECT_NE(("\n" + procs).find("\n" + std::to_string(pid) + "\n"), std::string::npos) << procs;
  EXPECT_NE(ReadFile(proc + "/limits").find("Max open files            4096"), std::string::npos);
  EXPECT_EQ(ReadFile(proc + "/environ"), "");
  // The jail holds hard links, not copies: the kernel inside is the kernel outside.
  EXPECT_EQ(Inode(jail_root + "/vm/kernel"), Inode(guest_ + "/vmlinuz"));

  ASSERT_TRUE(backend->Boot("vm-jail").ok());
  ASSERT_TRUE(WaitForConsole(created->console_log, "METALD-GUEST-READY", 1))
      << "console:\n"
      << ReadFile(created->console_log);
  std::string console = ReadFile(created->console_log);
  EXPECT_NE(console.find("METALD-GUEST-ROOT /dev/vda"), std::string::npos);
  EXPECT_NE(console.find("METALD-GUEST-NET eth0 10.77.0.2/24"), std::string::npos);
  // The guest answers from the VM's network namespace, through the TAP the jailed QEMU opened.
  bool pinged = false;
  for (int i = 0; i < 30 && !pinged; ++i) {
    pinged = Shell("ip netns exec " + tag_ + " ping -c 1 -W 2 10.77.0.2 >/dev/null 2>&1");
  }
  EXPECT_TRUE(pinged);

  // Graceful: the guest sees the power button and powers off; QEMU (its PID namespace's init)
  // exits 0.
  ShutdownRequest graceful;
  graceful.graceful = true;
  graceful.timeout = milliseconds(120'000);
  base::Result<ShutdownResult> down = backend->Shutdown("vm-jail", graceful);
  ASSERT_TRUE(down.ok()) << down.status().ToString();
  EXPECT_TRUE(down->graceful);
  EXPECT_TRUE(down->exit.clean()) << process::ToString(down->exit);
  ASSERT_TRUE(backend->Delete("vm-jail").ok());
  EXPECT_FALSE(fs::exists(options_.jail_base + "/vm-jail"));
  EXPECT_FALSE(fs::exists(req.vm_dir));
  EXPECT_EQ(process::MountsUnder(tmp_), mounts_before_);
  EXPECT_EQ(CountProcessesOfUid(uid_), 0);
  EXPECT_EQ(ReadFile(cgroup_dir_ + "/cgroup.procs"), "");
}

TEST_F(QemuJailSystemTest, FailedJailedCreateLeavesNothing) {
  std::unique_ptr<Backend> backend = NewQemuBackend(options_, spawner_.get());
  // A kernel that does not exist: the jail build fails at its first look at it.
  CreateRequest req = MakeRequest("vm-jail-bad");
  req.spec.boot.kernel_path = tmp_ + "/no-such-kernel";
  req.jail = VmJail{uid_, uid_, {cgroup_dir_ + "/cgroup.procs"}};
  base::Result<VmHandle> created = backend->Create(req);
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.status().message().find("no-such-kernel: No such file or directory (errno 2)"),
            std::string::npos)
      << created.status().ToString();
  EXPECT_FALSE(fs::exists(options_.jail_base + "/vm-jail-bad"));

  // A QEMU that starts in its jail and exits at once (a kernel file QEMU cannot load): the process
  // is reaped and the jail removed.
  std::string junk = tmp_ + "/junk-kernel";
  std::ofstream(junk) << "not a kernel";
  req.spec.boot.kernel_path = junk;
  created = backend->Create(req);
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.status().message().find("QEMU exited at start"), std::string::npos)
      << created.status().ToString();
  EXPECT_FALSE(fs::exists(options_.jail_base + "/vm-jail-bad"));
  EXPECT_EQ(process::MountsUnder(tmp_), mounts_before_);
  EXPECT_EQ(CountProcessesOfUid(uid_), 0);
  EXPECT_TRUE(backend->List().empty());

  // Uid 0 is refused before anything is built.
  req.jail->uid = 0;
  EXPECT_EQ(backend->Create(req).status().code(), base::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace metald::backend::qemu

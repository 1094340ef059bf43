// Unit tests of the QEMU backend that need no QEMU: the command line, the status mapping, and the
// error paths of Create with a spawner that fails on purpose.

#include "metald/backend/qemu/qemu_backend.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "metald/process/testing/fault_spawner.h"

namespace metald::backend::qemu {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

QemuLaunch BaseLaunch() {
  QemuLaunch l;
  l.binary = "/usr/bin/qemu-system-x86_64";
  l.vm_id = "vm-1";
  l.base_kernel_args = "console=ttyS0";
  l.spec.cpu.vcpu_count = 2;
  l.spec.memory.size_bytes = 256ull << 20;
  l.spec.boot.kernel_path = "/img/vmlinuz";
  l.spec.boot.initrd_path = "/img/initrd.img";
  l.spec.boot.kernel_args = "quiet";
  l.qmp_socket = "/run/metald/vm-1/qmp.sock";
  l.console_log = "/run/metald/vm-1/console.log";
  return l;
}

// The value following `flag` (first occurrence), or "" when absent.
std::string After(const std::vector<std::string>& args, const std::string& flag) {
  auto it = std::find(args.begin(), args.end(), flag);
  if (it == args.end() || it + 1 == args.end()) return "";
  return *(it + 1);
}

TEST(QemuArgsTest, TcgMicrovmStartsPausedWithQmpAndSerialFile) {
  QemuLaunch l = BaseLaunch();
  l.tsc_khz = 2095989;
  base::Result<std::vector<std::string>> args = BuildQemuArgs(l);
  ASSERT_TRUE(args.ok()) << args.status().ToString();
  const std::vector<std::string>& a = *args;
  EXPECT_EQ(a[0], l.binary);
  EXPECT_EQ(After(a, "-M"), "microvm,pit=on,rtc=on,acpi=on");
  EXPECT_EQ(After(a, "-accel"), "tcg");
  EXPECT_EQ(After(a, "-smp"), "2");
  EXPECT_EQ(After(a, "-m"), "256M");
  EXPECT_THAT(a, Contains("-S"));
  EXPECT_THAT(a, Contains("-nodefaults"));
  // Reboot must reset in place and power-off must end the process.
  EXPECT_THAT(a, ::testing::Not(Contains("-no-reboot")));
  EXPECT_THAT(a, ::testing::Not(Contains("-no-shutdown")));
  EXPECT_EQ(After(a, "-qmp"), "unix:/run/metald/vm-1/qmp.sock,server=on,wait=off");
  EXPECT_EQ(After(a, "-serial"), "file:/run/metald/vm-1/console.log");
  EXPECT_EQ(After(a, "-kernel"), "/img/vmlinuz");
  EXPECT_EQ(After(a, "-initrd"), "/img/initrd.img");
  EXPECT_EQ(After(a, "-append"), "console=ttyS0 tsc_early_khz=2095989 tsc=reliable quiet");
}

TEST(QemuArgsTest, KvmUsesHostCpuAndNoTscHint) {
  QemuLaunch l = BaseLaunch();
  l.kvm = true;
  l.tsc_khz = 2095989;
  base::Result<std::vector<std::string>> args = BuildQemuArgs(l);
  ASSERT_TRUE(args.ok());
  EXPECT_EQ(After(*args, "-accel"), "kvm");
  EXPECT_EQ(After(*args, "-cpu"), "host");
  EXPECT_THAT(After(*args, "-append"), ::testing::Not(HasSubstr("tsc_early_khz")));
}

TEST(QemuArgsTest, DrivesRootFirstAndTapsWithMac) {
  QemuLaunch l = BaseLaunch();
  l.spec.storage = {{"data", "/img/data,1.raw", false, false},
                    {"root", "/img/root.ext4", true, true}};
  l.spec.network = {{"eth0", "02:00:00:00:00:01", "", "", "", 0, 0}};
  l.tap_devices = {"tap-vm1"};
  base::Result<std::vector<std::string>> args = BuildQemuArgs(l);
  ASSERT_TRUE(args.ok()) << args.status().ToString();
  std::vector<std::string> drives;
  for (size_t i = 0; i + 1 < args->size(); ++i) {
    if ((*args)[i] == "-drive") drives.push_back((*args)[i + 1]);
  }
  ASSERT_EQ(drives.size(), 2u);
  EXPECT_EQ(drives[0], "id=drive-root,file=/img/root.ext4,format=raw,if=none,readonly=on");
  // A comma in a path is doubled, QEMU's escape.
  EXPECT_EQ(drives[1], "id=drive-data,file=/img/data,,1.raw,format=raw,if=none,readonly=off");
  EXPECT_THAT(*args, Contains("virtio-blk-device,drive=drive-root"));
  EXPECT_EQ(After(*args, "-netdev"), "tap,id=net-eth0,ifname=tap-vm1,script=no,downscript=no");
  EXPECT_THAT(*args, Contains("virtio-net-device,netdev=net-eth0,mac=02:00:00:00:00:01"));
  EXPECT_THAT(After(*args, "-append"), HasSubstr("root=/dev/vda ro"));
}

TEST(QemuArgsTest, RefusesWhatCannotBeExpressed) {
  QemuLaunch l = BaseLaunch();
  l.qmp_socket = "/run/a,b/qmp.sock";
  EXPECT_EQ(BuildQemuArgs(l).status().code(), base::StatusCode::kInvalidArgument);
  l = BaseLaunch();
  l.spec.network = {{"eth0", "", "", "", "", 0, 0}};
  EXPECT_EQ(BuildQemuArgs(l).status().code(), base::StatusCode::kInvalidArgument);
  l = BaseLaunch();
  l.spec.boot.kernel_path.clear();
  EXPECT_EQ(BuildQemuArgs(l).status().code(), base::StatusCode::kInvalidArgument);
}

TEST(QemuArgsTest, FirmwareDirOnlyWhenJailed) {
  QemuLaunch l = BaseLaunch();
  base::Result<std::vector<std::string>> args = BuildQemuArgs(l);
  ASSERT_TRUE(args.ok());
  EXPECT_THAT(*args, ::testing::Not(Contains("-L")));
  l.firmware_dir = "/usr/share/qemu";
  args = BuildQemuArgs(l);
  ASSERT_TRUE(args.ok());
  EXPECT_EQ(After(*args, "-L"), "/usr/share/qemu");
}

TEST(QemuBackendTest, JailedCreateWithoutJailBaseIsRefused) {
  std::unique_ptr<process::ProcessSpawner> real = process::NewSystemSpawner();
  process::testing::FaultSpawner spawner(real.get());
  QemuOptions options;
  options.binary = "/bin/true";
  options.accel = Accel::kTcg;
  std::unique_ptr<Backend> backend = NewQemuBackend(options, &spawner);
  CreateRequest req;
  req.vm_id = "vm-j";
  req.vm_dir = ::testing::TempDir() + "metald-qemu-jail-unit";
  req.spec.cpu.vcpu_count = 1;
  req.spec.memory.size_bytes = 128ull << 20;
  req.spec.boot.kernel_path = "/img/vmlinuz";
  req.jail = VmJail{900001, 900001, {}};
  base::Result<VmHandle> r = backend->Create(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("jail_base"));
  EXPECT_EQ(spawner.spawn_calls, 0);
  std::filesystem::remove_all(req.vm_dir);
}

TEST(QemuStatusTest, MapsQmpStatusToVmState) {
  EXPECT_EQ(StateFromQmpStatus("prelaunch"), model::VmState::kCreated);
  EXPECT_EQ(StateFromQmpStatus("running"), model::VmState::kRunning);
  EXPECT_EQ(StateFromQmpStatus("paused"), model::VmState::kPaused);
  EXPECT_EQ(StateFromQmpStatus("shutdown"), model::VmState::kStopped);
  EXPECT_EQ(StateFromQmpStatus("guest-panicked"), model::VmState::kFailed);
  EXPECT_EQ(StateFromQmpStatus("internal-error"), model::VmState::kFailed);
}

TEST(QemuBackendTest, SpawnFailureIsReportedAndNothingIsRegistered) {
  std::unique_ptr<process::ProcessSpawner> real = process::NewSystemSpawner();
  process::testing::FaultSpawner spawner(real.get());
  spawner.spawn_error = base::ResourceExhaustedError("Spawn: fork: injected");
  QemuOptions options;
  options.binary = "/bin/true";  // Never run: Spawn fails first.
  options.accel = Accel::kTcg;
  std::unique_ptr<Backend> backend = NewQemuBackend(options, &spawner);
  char tmpl[] = "/tmp/metald-qemu-unit.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  CreateRequest req;
  req.vm_id = "vm-x";
  req.vm_dir = std::string(tmpl) + "/vm-x";
  req.spec.boot.kernel_path = "/img/vmlinuz";
  base::Result<VmHandle> r = backend->Create(req);
  EXPECT_EQ(r.status().code(), base::StatusCode::kResourceExhausted);
  EXPECT_EQ(r.status().message(), "Create vm-x: Spawn: fork: injected");
  EXPECT_EQ(spawner.spawn_calls, 1);
  EXPECT_TRUE(backend->List().empty());
  std::filesystem::remove_all(tmpl);
}

TEST(QemuBackendTest, ProcessThatNeverOpensQmpFailsCreate) {
  // /bin/false exits at once: Create reports the early exit and registers nothing.
  std::unique_ptr<process::ProcessSpawner> spawner = process::NewSystemSpawner();
  QemuOptions options;
  options.binary = "/bin/false";
  options.accel = Accel::kTcg;
  std::unique_ptr<Backend> backend = NewQemuBackend(options, spawner.get());
  char tmpl[] = "/tmp/metald-qemu-unit.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  CreateRequest req;
  req.vm_id = "vm-y";
  req.vm_dir = std::string(tmpl) + "/vm-y";
  req.spec.boot.kernel_path = "/img/vmlinuz";
  base::Result<VmHandle> r = backend->Create(req);
  EXPECT_EQ(r.status().code(), base::StatusCode::kInternal);
  EXPECT_THAT(r.status().message(), HasSubstr("QEMU exited at start (exit 1)"));
  EXPECT_TRUE(backend->List().empty());
  std::filesystem::remove_all(tmpl);
}

TEST(QemuAccelTest, AutoFallsBackToTcgWithoutKvm) {
  std::unique_ptr<process::ProcessSpawner> spawner = process::NewSystemSpawner();
  QemuOptions options;
  options.kvm_device = "/nonexistent/kvm";
  AccelChoice choice = ChooseAccel(options, spawner.get());
  EXPECT_FALSE(choice.kvm);
  EXPECT_THAT(choice.reason, HasSubstr("does not exist"));
  options.accel = Accel::kKvm;
  EXPECT_TRUE(ChooseAccel(options, spawner.get()).kvm);
  options.accel = Accel::kTcg;
  EXPECT_FALSE(ChooseAccel(options, spawner.get()).kvm);
}

TEST(QemuBackendTest, UnknownVmIsNotFound) {
  std::unique_ptr<process::ProcessSpawner> spawner = process::NewSystemSpawner();
  QemuOptions options;
  options.accel = Accel::kTcg;
  std::unique_ptr<Backend> backend = NewQemuBackend(options, spawner.get());
  EXPECT_EQ(backend->Boot("vm-none").code(), base::StatusCode::kNotFound);
  EXPECT_EQ(backend->Delete("vm-none").code(), base::StatusCode::kNotFound);
  EXPECT_EQ(backend->Metrics("vm-none").status().code(), base::StatusCode::kNotFound);
  EXPECT_EQ(backend->Shutdown("vm-none", {}).status().code(), base::StatusCode::kNotFound);
}

}  // namespace
}  // namespace metald::backend::qemu

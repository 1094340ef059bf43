// The integrated jailer for real (root only): a static busybox spawned in a jail with a fresh uid,
// in a network namespace and a cgroup the test creates, checked through /proc; and a failure
// injected at every child step, each leaving no process, mount, file or directory behind.

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "metald/process/jail.h"
#include "metald/process/proc_stat.h"
#include "metald/process/process.h"

namespace metald::process {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ino_t Inode(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

// Pids of live processes whose real uid is `uid`.
std::vector<pid_t> ProcessesOfUid(uid_t uid) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  while (struct dirent* e = ::readdir(d)) {
    char* end;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::map<std::string, std::string> st = ReadProcStatusFields(static_cast<pid_t>(pid));
    if (st.count("Uid") && std::stoul(st["Uid"]) == uid && st["State"][0] != 'Z') {
      out.push_back(static_cast<pid_t>(pid));
    }
  }
  ::closedir(d);
  return out;
}

bool Shell(const std::string& cmd) { return std::system(cmd.c_str()) == 0; }

class JailSpawnTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (netns, cgroups, chroot, setuid)";
    tag_ = "metald-jt-" + std::to_string(::getpid());
    ASSERT_TRUE(Shell("ip netns add " + tag_)) << "ip netns add";
    netns_ = "/run/netns/" + tag_;
    // A cgroup v1 pids group if the host has one, else a v2 group (the spawner only writes "0"
    // into the listed files; cgroup.h creates the real per-VM groups).
    for (const char* parent : {"/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
      std::string dir = std::string(parent) + "/" + tag_;
      if (fs::exists(std::string(parent) + "/cgroup.procs") && ::mkdir(dir.c_str(), 0755) == 0) {
        cgroup_dir_ = dir;
        break;
      }
    }
    ASSERT_FALSE(cgroup_dir_.empty()) << "no cgroup hierarchy to test with";

    char tmpl[] = "/tmp/metald-jailspawn-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
    layout_.base = tmp_ + "/jails";
    layout_.vm_id = "vm-jail";
    uid_t uid = *uids_.Allocate(layout_.vm_id);
    layout_.uid = layout_.gid = uid;
    layout_.files = {{"/bin/busybox", "/bin/busybox", false}};
    layout_.devices = StandardJailDevices(/*tun=*/true, /*kvm=*/false);
    layout_.vm_dirs = {"/run"};
    base::Result<PreparedJail> jail = PrepareJail(layout_);
    ASSERT_TRUE(jail.ok()) << jail.status().ToString();
    jail_ = *jail;
    mounts_before_ = MountsUnder(tmp_);
  }

  void TearDown() override {
    if (::geteuid() != 0) return;
    (void)RemoveJail(layout_.base, layout_.vm_id);
    if (!cgroup_dir_.empty()) ::rmdir(cgroup_dir_.c_str());
    if (!netns_.empty()) (void)Shell("ip netns delete " + tag_);
    std::error_code ec;
    if (!tmp_.empty()) fs::remove_all(tmp_, ec);
  }

  SpawnSpec JailedSleep() {
    SpawnSpec spec;
    spec.argv = {"/bin/busybox", "sleep", "600"};
    spec.env = {"METALD_TEST=1"};
    spec.cwd = "/run";
    spec.output_file = tmp_ + "/out.log";
    spec.netns_path = netns_;
    JailSpec j;
    j.root = jail_.root;
    j.uid = layout_.uid;
    j.gid = layout_.gid;
    j.cgroup_procs_files = {cgroup_dir_ + "/cgroup.procs"};
    j.rlimits = {{RLIMIT_NOFILE, 64, 128}, {RLIMIT_FSIZE, 1 << 20, 1 << 20}};
    spec.jail = j;
    return spec;
  }

  // Everything is gone again: no process of the VM's uid, no child of ours, no new mount, no jail
  // files once the jail is removed.
  void ExpectNothingLeft() {
    EXPECT_TRUE(ProcessesOfUid(layout_.uid).empty());
    int status;
    EXPECT_EQ(::waitpid(-1, &status, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD);
    // Only this test's tree: other tests on the host may mount and unmount meanwhile.
    EXPECT_EQ(MountsUnder(tmp_), mounts_before_);
  }

  // A range of its own per test process, so concurrent runs never share a uid.
  UidAllocator uids_{static_cast<uid_t>(900000 + ::getpid() % 60000), 965535};
  std::unique_ptr<ProcessSpawner> spawner_ = NewSystemSpawner();
  std::string tag_;
  std::string netns_;
  std::string cgroup_dir_;
  std::string tmp_;
  JailLayout layout_;
  PreparedJail jail_;
  std::vector<std::string> mounts_before_;
};

TEST_F(JailSpawnTest, ProcessRunsConfined) {
  SpawnSpec spec = JailedSleep();
  base::Result<ProcessId> id = spawner_->Spawn(spec);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  const std::string proc = "/proc/" + std::to_string(id->pid);

  std::map<std::string, std::string> st = ReadProcStatusFields(id->pid);
  const std::string u = std::to_string(layout_.uid);
  EXPECT_EQ(st["Uid"], u + "\t" + u + "\t" + u + "\t" + u);
  EXPECT_EQ(st["Gid"], u + "\t" + u + "\t" + u + "\t" + u);
  EXPECT_EQ(st["Groups"], "");
  for (const char* cap : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(st[cap], "0000000000000000") << cap;
  }
  EXPECT_EQ(st["NoNewPrivs"], "1");

  // In its chroot, its network namespace and its cgroup.
  EXPECT_EQ(fs::read_symlink(proc + "/root").string(), jail_.root);
  EXPECT_EQ(fs::read_symlink(proc + "/cwd").string(), jail_.root + "/run");
  EXPECT_EQ(Inode(proc + "/ns/net"), Inode(netns_));
  EXPECT_NE(Inode(proc + "/ns/net"), Inode("/proc/self/ns/net"));
  std::string procs = ReadAll(cgroup_dir_ + "/cgroup.procs");
  EXPECT_NE(("\n" + procs).find("\n" + std::to_string(id->pid) + "\n"), std::string::npos) << procs;

  // Limits, environment, descriptors.
  std::string limits = ReadAll(proc + "/limits");
  EXPECT_NE(limits.find("Max open files            64                   128"), std::string::npos)
      << limits;
  EXPECT_NE(limits.find("Max file size             1048576              1048576"),
            std::string::npos)
      << limits;
  EXPECT_EQ(ReadAll(proc + "/environ"), std::string("METALD_TEST=1") + '\0');
  std::set<std::string> fds;
  for (const auto& e : fs::directory_iterator(proc + "/fd")) fds.insert(e.path().filename());
  EXPECT_EQ(fds, std::set<std::string>({"0", "1", "2"}));
  // Not in a new PID namespace unless asked.
  EXPECT_EQ(st["NSpid"], std::to_string(id->pid));

  base::Result<ExitInfo> exit = spawner_->Kill(*id, milliseconds(10'000));
  ASSERT_TRUE(exit.ok()) << exit.status().ToString();
  EXPECT_EQ(exit->signal, SIGKILL);
  ASSERT_TRUE(RemoveJail(layout_.base, layout_.vm_id).ok());
  EXPECT_FALSE(fs::exists(jail_.dir));
  ExpectNothingLeft();
}

TEST_F(JailSpawnTest, JailedProcessCannotWriteOutsideItsDirsOrRegainRoot) {
  // A shell inside the jail: its own dir is writable, "/" is not, and su-like escalation is gone.
  SpawnSpec spec = JailedSleep();
  std::string script =
      "echo ok > /run/mine && echo mine-written;"
      "echo x > /evil 2>/dev/null || echo root-refused;"
      "/bin/busybox chroot / /bin/busybox true 2>/dev/null || echo chroot-refused;"
      "/bin/busybox cat /dev/urandom | /bin/busybox head -c 4 > /dev/null && echo urandom-ok";
  spec.argv = {"/bin/busybox", "sh", "-c", script};
  base::Result<ProcessId> id = spawner_->Spawn(spec);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  base::Result<ExitInfo> exit = spawner_->WaitForExit(*id, milliseconds(60'000));
  ASSERT_TRUE(exit.ok()) << exit.status().ToString();
  std::string out = ReadAll(tmp_ + "/out.log");
  EXPECT_NE(out.find("mine-written"), std::string::npos) << out;
  EXPECT_NE(out.find("root-refused"), std::string::npos) << out;
  EXPECT_NE(out.find("chroot-refused"), std::string::npos) << out;
  EXPECT_NE(out.find("urandom-ok"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(jail_.root + "/evil"));
  struct stat mine;
  ASSERT_EQ(::stat((jail_.root + "/run/mine").c_str(), &mine), 0);
  EXPECT_EQ(mine.st_uid, layout_.uid);
  ASSERT_TRUE(RemoveJail(layout_.base, layout_.vm_id).ok());
  ExpectNothingLeft();
}

TEST_F(JailSpawnTest, NewPidNamespace) {
  SpawnSpec spec = JailedSleep();
  spec.jail->new_pid_namespace = true;
  base::Result<ProcessId> id = spawner_->Spawn(spec);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  std::map<std::string, std::string> st = ReadProcStatusFields(id->pid);
  // Host pid, then 1: the VMM is the init of its own PID namespace.
  EXPECT_EQ(st["NSpid"], std::to_string(id->pid) + "\t1");
  EXPECT_NE(Inode("/proc/" + std::to_string(id->pid) + "/ns/pid"), Inode("/proc/self/ns/pid"));
  EXPECT_EQ(st["CapEff"], "0000000000000000");
  EXPECT_EQ(fs::read_symlink("/proc/" + std::to_string(id->pid) + "/root").string(), jail_.root);
  std::string procs = ReadAll(cgroup_dir_ + "/cgroup.procs");
  EXPECT_NE(("\n" + procs).find("\n" + std::to_string(id->pid) + "\n"), std::string::npos) << procs;
  EXPECT_TRUE(spawner_->IsAlive(*id));
  base::Result<ExitInfo> exit = spawner_->Kill(*id, milliseconds(10'000));
  ASSERT_TRUE(exit.ok()) << exit.status().ToString();
  EXPECT_TRUE(exit->known);
  ASSERT_TRUE(RemoveJail(layout_.base, layout_.vm_id).ok());
  ExpectNothingLeft();
}

TEST_F(JailSpawnTest, NetnsWithoutJail) {
  SpawnSpec spec;
  spec.argv = {"/bin/busybox", "sleep", "600"};
  spec.netns_path = netns_;
  base::Result<ProcessId> id = spawner_->Spawn(spec);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(Inode("/proc/" + std::to_string(id->pid) + "/ns/net"), Inode(netns_));
  EXPECT_EQ(ReadProcStatusFields(id->pid)["Uid"].substr(0, 2), "0\t");
  ASSERT_TRUE(spawner_->Kill(*id, milliseconds(10'000)).ok());

  spec.netns_path = tmp_ + "/no-such-netns";
  base::Result<ProcessId> bad = spawner_->Spawn(spec);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), base::StatusCode::kNotFound);
  EXPECT_NE(bad.status().message().find("open netns"), std::string::npos);
  // A file that is not a namespace: setns itself fails in the child, named with its errno.
  spec.netns_path = "/bin/busybox";
  bad = spawner_->Spawn(spec);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("setns net /bin/busybox: Invalid argument (errno 22)"),
            std::string::npos)
      << bad.status().message();
  ExpectNothingLeft();
}

TEST_F(JailSpawnTest, RejectsRootIdentityAndRelativeRoot) {
  SpawnSpec spec = JailedSleep();
  spec.jail->uid = 0;
  EXPECT_EQ(spawner_->Spawn(spec).status().code(), base::StatusCode::kInvalidArgument);
  spec = JailedSleep();
  spec.jail->root = "relative";
  EXPECT_EQ(spawner_->Spawn(spec).status().code(), base::StatusCode::kInvalidArgument);
  spec = JailedSleep();
  spec.argv[0] = "/bin/missing";
  base::Result<ProcessId> r = spawner_->Spawn(spec);
  EXPECT_EQ(r.status().code(), base::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(jail_.root + "/bin/missing"), std::string::npos);
}

TEST_F(JailSpawnTest, RealStepFailuresNameStepAndErrno) {
  // A cgroup file that does not exist.
  SpawnSpec spec = JailedSleep();
  spec.jail->cgroup_procs_files.push_back(tmp_ + "/no-cgroup/cgroup.procs");
  base::Result<ProcessId> r = spawner_->Spawn(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "Spawn: cgroup write " + tmp_ +
                "/no-cgroup/cgroup.procs: No such file or directory (errno 2)");
  // A soft limit above the hard one.
  spec = JailedSleep();
  spec.jail->rlimits = {{RLIMIT_NOFILE, 256, 128}};
  r = spawner_->Spawn(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "Spawn: setrlimit RLIMIT_NOFILE: Invalid argument (errno 22)");
  // A working directory missing inside the jail (it exists outside).
  spec = JailedSleep();
  spec.cwd = "/tmp";
  r = spawner_->Spawn(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "Spawn: chdir /tmp: No such file or directory (errno 2)");
  // A binary the VM uid may not execute: permission is checked after the uid switch.
  ASSERT_TRUE(Shell("cp /bin/busybox " + jail_.root + "/bin/private && chmod 0700 " + jail_.root +
                    "/bin/private"));
  spec = JailedSleep();
  spec.argv[0] = "/bin/private";
  r = spawner_->Spawn(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "Spawn: execve /bin/private: Permission denied (errno 13)");
  EXPECT_EQ(r.status().code(), base::StatusCode::kPermissionDenied);
  ASSERT_TRUE(RemoveJail(layout_.base, layout_.vm_id).ok());
  ExpectNothingLeft();
}

TEST_F(JailSpawnTest, InjectedFailureAtEveryChildStep) {
  std::set<std::string> jail_tree;
  for (const auto& e : fs::recursive_directory_iterator(jail_.dir)) {
    jail_tree.insert(e.path().string());
  }
  std::string procs_before = ReadAll(cgroup_dir_ + "/cgroup.procs");
  for (JailStep step : AllChildJailSteps()) {
    SCOPED_TRACE(std::string(JailStepName(step)));
    SpawnSpec spec = JailedSleep();
    spec.jail->fault = {step, ENOTRECOVERABLE};
    base::Result<ProcessId> r = spawner_->Spawn(spec);
    ASSERT_FALSE(r.ok());
    const std::string msg = r.status().message();
    EXPECT_EQ(msg.rfind("Spawn: " + std::string(JailStepName(step)), 0), 0u) << msg;
    EXPECT_NE(msg.find(": State not recoverable (errno " + std::to_string(ENOTRECOVERABLE) + ")"),
              std::string::npos)
        << msg;
    // The failed child is reaped, nothing runs as the VM, the jail is as it was, and the cgroup
    // holds no process.
    ExpectNothingLeft();
    std::set<std::string> now;
    for (const auto& e : fs::recursive_directory_iterator(jail_.dir)) now.insert(e.path().string());
    EXPECT_EQ(now, jail_tree);
    EXPECT_EQ(ReadAll(cgroup_dir_ + "/cgroup.procs"), procs_before);
  }
  // Undo of the whole VM: the jail goes away completely.
  ASSERT_TRUE(RemoveJail(layout_.base, layout_.vm_id).ok());
  EXPECT_FALSE(fs::exists(jail_.dir));
  EXPECT_TRUE(fs::is_empty(layout_.base));
  ExpectNothingLeft();
}

}  // namespace
}  // namespace metald::process

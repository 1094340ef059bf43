// CgroupManager on this machine's real cgroups (root only; skipped otherwise or when memory, cpu
// or pids is in no hierarchy). Each test uses its own root group "metald-test-<pid>-<n>", so a
// running metald is never touched, and TearDown proves the root is gone from every hierarchy.
//
// Children are forked from the test and enter their groups exactly as the jailer's child does:
// they write "0" (= themselves) into every VmCgroup::procs_files entry before doing anything else.

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "metald/process/cgroup.h"

namespace metald::process {
namespace {

using base::StatusCode;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint64_t kMiB = 1024 * 1024;

CgroupLimits Limits(uint64_t memory_bytes, uint32_t vcpus, int64_t pids_max = 0) {
  CgroupLimits l;
  l.memory_bytes = memory_bytes;
  l.vcpus = vcpus;
  l.pids_max = pids_max;
  return l;
}

std::string ReadTrimmed(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool DirExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

int CountOpenFds() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// In a forked child: enter every group. Only async-signal-safe calls. False on any failure.
bool JoinGroups(const std::vector<std::string>& procs_files) {
  for (const std::string& f : procs_files) {
    int fd = ::open(f.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = ::write(fd, "0", 1) == 1;
    ::close(fd);
    if (!ok) return false;
  }
  return true;
}

// Waits for `pid` (with a generous bound so a broken kernel cannot hang the suite) and returns
// its wait status; -1 on timeout (the child is then killed).
int WaitBounded(pid_t pid, int seconds = 120) {
  for (int i = 0; i < seconds * 100; ++i) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;
    ::usleep(10000);
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return -1;
}

// Forks a child that enters `vm`'s groups and execs argv. Returns once the exec happened (a
// close-on-exec pipe reports failure before it); -1 when joining or exec failed.
pid_t SpawnInGroup(const VmCgroup& vm, const std::vector<const char*>& argv) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    char step = 'j';
    if (JoinGroups(vm.procs_files)) {
      std::vector<char*> args;
      for (const char* a : argv) args.push_back(const_cast<char*>(a));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      step = 'e';
    }
    (void)!::write(p[1], &step, 1);
    ::_exit(127);
  }
  ::close(p[1]);
  char step = 0;
  ssize_t n = ::read(p[0], &step, 1);
  ::close(p[0]);
  if (n != 0) {
    WaitBounded(pid);
    return -1;
  }
  return pid;
}

// The cgroup path /proc/<pid>/cgroup shows for `controller` ("" for the v2 line "0::").
std::string ProcCgroupPath(pid_t pid, const std::string& controller) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    size_t a = line.find(':');
    size_t b = line.find(':', a + 1);
    std::string list = line.substr(a + 1, b - a - 1);
    std::stringstream ls(list);
    std::string c;
    if (controller.empty() && list.empty()) return line.substr(b + 1);
    while (std::getline(ls, c, ','))
      if (c == controller) return line.substr(b + 1);
  }
  return "<none>";
}

class CgroupHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    static std::atomic<int> counter{0};
    options_.root_name =
        "metald-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    auto mgr = CgroupManager::Open(options_);
    if (mgr.status().code() == StatusCode::kUnavailable) GTEST_SKIP() << mgr.status().ToString();
    ASSERT_TRUE(mgr.ok()) << mgr.status().ToString();
    mgr_ = std::move(*mgr);
    std::cout << "cgroup mode: " << mgr_->Mode() << "\n";
  }
  void TearDown() override {
    if (mgr_ == nullptr) return;
    for (pid_t pid : children_) {
      ::kill(pid, SIGKILL);
      WaitBounded(pid);
    }
    auto left = mgr_->ListLeftovers();
    ASSERT_TRUE(left.ok());
    // Remove whatever a failed test left, deepest first.
    for (auto it = left->rbegin(); it != left->rend(); ++it) ::rmdir(it->c_str());
    EXPECT_THAT(*left, IsEmpty()) << "test left groups behind";
    EXPECT_TRUE(mgr_->RemoveRoot().ok());
    for (const std::string& root : mgr_->RootDirs()) EXPECT_FALSE(DirExists(root)) << root;
  }

  // The directory of `vm` in the hierarchy serving `controller`.
  std::string DirFor(const VmCgroup& vm, const std::string& controller) {
    std::string mode = mgr_->Mode();
    std::string key = (controller == "io" ? "io" : controller) + "=";
    size_t at = mode.find(key);
    size_t open = mode.find('(', at);
    size_t close = mode.find(')', open);
    std::string mount = mode.substr(open + 1, close - open - 1);
    for (const std::string& d : vm.dirs)
      if (d.starts_with(mount + "/")) return d;
    return "<none>";
  }
  std::string MountOf(const std::string& controller) {
    std::string mode = mgr_->Mode();
    size_t at = mode.find(controller + "=");
    size_t open = mode.find('(', at);
    return mode.substr(open + 1, mode.find(')', open) - open - 1);
  }

  CgroupOptions options_;
  std::unique_ptr<CgroupManager> mgr_;
  std::vector<pid_t> children_;
};

TEST_F(CgroupHostTest, LimitsAreInTheKernelFiles) {
  auto vm = mgr_->Create("cust", "vm1", Limits(32 * kMiB, 2, 64));
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  std::string mem = DirFor(*vm, "memory");
  std::string cpu = DirFor(*vm, "cpu");
  std::string pids = DirFor(*vm, "pids");
  if (mgr_->version("memory") == CgroupVersion::kV1) {
    EXPECT_EQ(ReadTrimmed(mem + "/memory.limit_in_bytes"), "33554432");
    if (std::filesystem::exists(mem + "/memory.memsw.limit_in_bytes")) {
      EXPECT_EQ(ReadTrimmed(mem + "/memory.memsw.limit_in_bytes"), "33554432");
    }
  } else {
    EXPECT_EQ(ReadTrimmed(mem + "/memory.max"), "33554432");
  }
  if (mgr_->version("cpu") == CgroupVersion::kV1) {
    EXPECT_EQ(ReadTrimmed(cpu + "/cpu.cfs_quota_us"), "200000");
    EXPECT_EQ(ReadTrimmed(cpu + "/cpu.cfs_period_us"), "100000");
  } else {
    EXPECT_EQ(ReadTrimmed(cpu + "/cpu.max"), "200000 100000");
  }
  EXPECT_EQ(ReadTrimmed(pids + "/pids.max"), "64");
  auto found = mgr_->Lookup("cust", "vm1");
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->dirs, vm->dirs);
  EXPECT_TRUE(mgr_->Remove("cust", "vm1").ok());
  EXPECT_EQ(mgr_->Lookup("cust", "vm1").status().code(), StatusCode::kNotFound);
}

TEST_F(CgroupHostTest, IoThrottleIsInTheKernelFiles) {
  if (mgr_->version("io") == CgroupVersion::kNone) GTEST_SKIP() << "no io/blkio controller";
  struct stat st;
  ASSERT_EQ(::stat("/", &st), 0);
  // The disk holding "/" (a partition's throttle works too, but a whole disk is always there).
  std::string dev_line;
  std::ifstream parts("/proc/partitions");
  std::string line;
  uint32_t major = 0, minor = 0;
  while (std::getline(parts, line)) {
    std::stringstream ls(line);
    uint32_t ma, mi;
    if (ls >> ma >> mi) {
      major = ma;
      minor = mi;
      break;
    }
  }
  ASSERT_NE(major, 0u) << "no block device in /proc/partitions";
  CgroupLimits l = Limits(64 * kMiB, 1);
  l.io.push_back({.major = major,
                  .minor = minor,
                  .read_bps = 1048576,
                  .write_bps = 0,
                  .read_iops = 0,
                  .write_iops = 100});
  auto vm = mgr_->Create("cust", "io", l);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  std::string dir = DirFor(*vm, "io");
  std::string dev = std::to_string(major) + ":" + std::to_string(minor);
  if (mgr_->version("io") == CgroupVersion::kV1) {
    EXPECT_EQ(ReadTrimmed(dir + "/blkio.throttle.read_bps_device"), dev + " 1048576");
    EXPECT_EQ(ReadTrimmed(dir + "/blkio.throttle.write_iops_device"), dev + " 100");
    EXPECT_EQ(ReadTrimmed(dir + "/blkio.throttle.write_bps_device"), "");
  } else {
    EXPECT_THAT(ReadTrimmed(dir + "/io.max"), HasSubstr(dev + " rbps=1048576"));
  }
  EXPECT_TRUE(mgr_->Remove("cust", "io").ok());
}

TEST_F(CgroupHostTest, ChildRunsInItsGroupForEveryController) {
  auto vm = mgr_->Create("cust", "vm1", Limits(64 * kMiB, 1));
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  pid_t pid = SpawnInGroup(*vm, {"/bin/sleep", "60"});
  ASSERT_GT(pid, 0);
  children_.push_back(pid);
  const std::string rel = "/" + options_.root_name + "/cust/vm1";
  for (const std::string c : {"memory", "cpu", "pids"}) {
    std::string key = mgr_->version(c) == CgroupVersion::kV2 ? "" : c;
    EXPECT_EQ(ProcCgroupPath(pid, key), rel) << c;
    EXPECT_EQ(ReadTrimmed(DirFor(*vm, c) + "/cgroup.procs"), std::to_string(pid)) << c;
  }
  auto usage = mgr_->Usage(*vm);
  ASSERT_TRUE(usage.ok()) << usage.status().ToString();
  EXPECT_EQ(usage->pids_current, 1);
  EXPECT_GT(usage->memory_bytes, 0u);
  EXPECT_TRUE(usage->cpu_known);

  // Remove requires the process gone: it refuses, naming the pid, and removes nothing.
  auto st = mgr_->Remove("cust", "vm1");
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr(std::to_string(pid)));
  for (const std::string& d : vm->dirs) EXPECT_TRUE(DirExists(d)) << d;

  ::kill(pid, SIGKILL);
  int status = WaitBounded(pid);
  children_.clear();
  EXPECT_TRUE(WIFSIGNALED(status));
  ASSERT_TRUE(mgr_->Remove("cust", "vm1").ok());
  for (const std::string& d : vm->dirs) EXPECT_FALSE(DirExists(d)) << d;
  EXPECT_THAT(mgr_->ListLeftovers().value(), IsEmpty());
}

// A child that keeps allocating inside a 32 MiB group is killed by the kernel (SIGKILL) instead of
// taking the host's memory; the group's peak never passes the limit.
TEST_F(CgroupHostTest, MemoryHogIsOomKilledAtItsLimit) {
  constexpr uint64_t kLimit = 32 * kMiB;
  auto vm = mgr_->Create("cust", "hog", Limits(kLimit, 1));
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (!JoinGroups(vm->procs_files)) ::_exit(3);
    // Up to 1 GiB, touching every page; only the OOM killer stops this before the end.
    for (int i = 0; i < 1024; ++i) {
      char* p = static_cast<char*>(std::malloc(kMiB));
      if (p == nullptr) ::_exit(4);
      std::memset(p, i & 0xff, kMiB);
    }
    ::_exit(0);
  }
  int status = WaitBounded(pid);
  ASSERT_NE(status, -1) << "hog did not end";
  ASSERT_FALSE(WIFEXITED(status)) << "hog exited with " << WEXITSTATUS(status)
                                  << " (0: grew to 1 GiB past its limit; 3: could not join)";
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  auto usage = mgr_->Usage(*vm);
  ASSERT_TRUE(usage.ok()) << usage.status().ToString();
  EXPECT_GE(usage->oom_kills, 1u);
  if (usage->memory_peak_bytes != 0) {
    EXPECT_LE(usage->memory_peak_bytes, kLimit);
  }
  EXPECT_TRUE(mgr_->Remove("cust", "hog").ok());
}

// A fork bomb in a group with pids.max 8 gets exactly 7 children (itself is the 8th).
TEST_F(CgroupHostTest, PidsMaxStopsAForkBomb) {
  auto vm = mgr_->Create("cust", "bomb", Limits(64 * kMiB, 1, 8));
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (!JoinGroups(vm->procs_files)) ::_exit(100);
    pid_t kids[32];
    int made = 0, refused = 0;
    for (int i = 0; i < 32; ++i) {
      pid_t k = ::fork();
      if (k == 0) {
        ::pause();
        ::_exit(0);
      }
      if (k > 0) {
        kids[made++] = k;
      } else if (errno == EAGAIN) {
        ++refused;
      }
    }
    for (int i = 0; i < made; ++i) ::kill(kids[i], SIGKILL);
    for (int i = 0; i < made; ++i) ::waitpid(kids[i], nullptr, 0);
    ::_exit(made + refused == 32 ? made : 101);
  }
  int status = WaitBounded(pid);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 7);
  EXPECT_TRUE(mgr_->Remove("cust", "bomb").ok());
}

// Usage counts the group's CPU time, and the quota holds: a child spinning for 1 s of wall time
// at 0.2 CPU gets far less than the 1 s it would get unlimited.
class CgroupHostCpuTest : public CgroupHostTest {
 protected:
  void SetUp() override {
    options_.cpu_ratio = 0.2;
    CgroupHostTest::SetUp();
  }
};

TEST_F(CgroupHostCpuTest, CpuQuotaThrottlesASpinner) {
  CgroupManager* mgr = mgr_.get();
  auto vm = mgr->Create("cust", "spin", Limits(64 * kMiB, 1));
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  timespec start, now;
  ::clock_gettime(CLOCK_MONOTONIC, &start);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (!JoinGroups(vm->procs_files)) ::_exit(3);
    timespec t0, t;
    ::clock_gettime(CLOCK_MONOTONIC, &t0);
    volatile uint64_t x = 0;
    do {
      for (int i = 0; i < 100000; ++i) x = x + 1;
      ::clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000000000LL + (t.tv_nsec - t0.tv_nsec) < 1000000000LL);
    ::_exit(0);
  }
  int status = WaitBounded(pid);
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  auto usage = mgr->Usage(*vm);
  ASSERT_TRUE(usage.ok()) << usage.status().ToString();
  EXPECT_TRUE(mgr->Remove("cust", "spin").ok());
  if (!usage->cpu_known) GTEST_SKIP() << "no CPU accounting for the group";
  const int64_t wall_ns =
      (now.tv_sec - start.tv_sec) * 1000000000LL + (now.tv_nsec - start.tv_nsec);
  EXPECT_GT(usage->cpu_usage_ns, 0u);
  // Ratio, not a deadline: 0.2 CPU of quota; 0.6 leaves room for period granularity.
  EXPECT_LT(static_cast<double>(usage->cpu_usage_ns), 0.6 * static_cast<double>(wall_ns))
      << "cpu " << usage->cpu_usage_ns << " ns in " << wall_ns << " ns wall";
}

// A CgroupFs over the real one that fails writes to one file, as a kernel rejecting a value
// would.
class FailOneWriteFs : public CgroupFs {
 public:
  explicit FailOneWriteFs(std::string suffix) : suffix_(std::move(suffix)) {}
  base::Status MakeDir(const std::string& p) override { return real_->MakeDir(p); }
  base::Status RemoveDir(const std::string& p) override { return real_->RemoveDir(p); }
  base::Status WriteFile(const std::string& p, std::string_view v) override {
    if (p.ends_with(suffix_)) return base::InvalidArgumentError("write " + p + ": injected");
    return real_->WriteFile(p, v);
  }
  base::Result<std::string> ReadFile(const std::string& p) override { return real_->ReadFile(p); }
  bool Exists(const std::string& p) override { return real_->Exists(p); }
  base::Result<std::vector<std::string>> ListDirs(const std::string& p) override {
    return real_->ListDirs(p);
  }

 private:
  CgroupFs* real_ = CgroupFs::Default();
  std::string suffix_;
};

TEST_F(CgroupHostTest, FailureInTheMiddleLeavesNoGroup) {
  // A real kernel refusal: a throttle for a device that does not exist.
  if (mgr_->version("io") != CgroupVersion::kNone) {
    CgroupLimits l = Limits(32 * kMiB, 1);
    l.io.push_back({.major = 4000,
                    .minor = 4000,
                    .read_bps = 1000,
                    .write_bps = 0,
                    .read_iops = 0,
                    .write_iops = 0});
    auto vm = mgr_->Create("cust", "badio", l);
    ASSERT_FALSE(vm.ok());
    EXPECT_THAT(vm.status().message(), HasSubstr("4000:4000"));
    EXPECT_THAT(mgr_->ListLeftovers().value(), IsEmpty());
  }
  // An injected failure at the last limit written (pids.max), after memory and cpu succeeded.
  FailOneWriteFs fs("/pids.max");
  CgroupOptions o = options_;
  o.fs = &fs;
  auto faulty = CgroupManager::Open(o);
  ASSERT_TRUE(faulty.ok()) << faulty.status().ToString();
  auto vm = (*faulty)->Create("cust", "vm1", Limits(32 * kMiB, 1));
  ASSERT_FALSE(vm.ok());
  EXPECT_THAT(vm.status().message(), HasSubstr("pids.max"));
  EXPECT_THAT(mgr_->ListLeftovers().value(), IsEmpty());
  for (const std::string& root : mgr_->RootDirs()) EXPECT_FALSE(DirExists(root + "/cust"));

  // The same failure with a sibling VM: the sibling and its customer group stay.
  ASSERT_TRUE(mgr_->Create("cust", "sibling", Limits(32 * kMiB, 1)).ok());
  ASSERT_FALSE((*faulty)->Create("cust", "vm1", Limits(32 * kMiB, 1)).ok());
  auto left = mgr_->ListLeftovers();
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(left->size(), 2 * mgr_->RootDirs().size());  // cust + cust/sibling per hierarchy
  for (const std::string& root : mgr_->RootDirs()) {
    EXPECT_TRUE(DirExists(root + "/cust/sibling"));
    EXPECT_FALSE(DirExists(root + "/cust/vm1"));
  }
  EXPECT_TRUE(mgr_->Remove("cust", "sibling").ok());
}

TEST_F(CgroupHostTest, CustomerGroupGoesWithItsLastVmAndCapsApply) {
  ASSERT_TRUE(mgr_->SetCustomerLimits("cust", {.memory_bytes = 256 * kMiB, .cpus = 1.5}).ok());
  auto a = mgr_->Create("cust", "a", Limits(64 * kMiB, 1));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto b = mgr_->Create("cust", "b", Limits(64 * kMiB, 4));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  std::string mem_customer = MountOf("memory") + "/" + options_.root_name + "/cust";
  std::string cpu_customer = MountOf("cpu") + "/" + options_.root_name + "/cust";
  if (mgr_->version("memory") == CgroupVersion::kV1) {
    EXPECT_EQ(ReadTrimmed(mem_customer + "/memory.limit_in_bytes"), "268435456");
  } else {
    EXPECT_EQ(ReadTrimmed(mem_customer + "/memory.max"), "268435456");
  }
  if (mgr_->version("cpu") == CgroupVersion::kV1) {
    EXPECT_EQ(ReadTrimmed(cpu_customer + "/cpu.cfs_quota_us"), "150000");
    // 4 vCPUs exceed the customer's 1.5: v1 needs the clamp or the kernel refuses the write.
    EXPECT_EQ(ReadTrimmed(cpu_customer + "/b/cpu.cfs_quota_us"), "150000");
  } else {
    EXPECT_EQ(ReadTrimmed(cpu_customer + "/cpu.max"), "150000 100000");
  }
  ASSERT_TRUE(mgr_->Remove("cust", "a").ok());
  for (const std::string& root : mgr_->RootDirs()) EXPECT_TRUE(DirExists(root + "/cust"));
  ASSERT_TRUE(mgr_->Remove("cust", "b").ok());
  for (const std::string& root : mgr_->RootDirs()) EXPECT_FALSE(DirExists(root + "/cust"));
  EXPECT_TRUE(mgr_->Remove("cust", "b").ok());  // idempotent
  // The caps are remembered for the customer's next VM.
  ASSERT_TRUE(mgr_->Create("cust", "c", Limits(64 * kMiB, 1)).ok());
  if (mgr_->version("memory") == CgroupVersion::kV1) {
    EXPECT_EQ(ReadTrimmed(mem_customer + "/memory.limit_in_bytes"), "268435456");
  }
  ASSERT_TRUE(mgr_->Remove("cust", "c").ok());
}

// 50 VMs, each with a real process that enters its group, created and removed in a loop: no
// group, descriptor or child remains.
TEST_F(CgroupHostTest, FiftyCyclesLeaveTheHostAsItWas) {
  const int fds_before = CountOpenFds();
  for (int i = 0; i < 50; ++i) {
    const std::string customer = "cust" + std::to_string(i % 3);
    const std::string id = "vm" + std::to_string(i);
    auto vm = mgr_->Create(customer, id, Limits(32 * kMiB, 1, 16));
    ASSERT_TRUE(vm.ok()) << i << ": " << vm.status().ToString();
    pid_t pid = SpawnInGroup(*vm, {"/bin/true"});
    ASSERT_GT(pid, 0) << i;
    int status = WaitBounded(pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << i;
    ASSERT_TRUE(mgr_->Remove(customer, id).ok()) << i;
  }
  EXPECT_THAT(mgr_->ListLeftovers().value(), IsEmpty());
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);  // no child (or zombie) left
  EXPECT_EQ(errno, ECHILD);
}

// Create and Remove for one customer from several threads: the customer group is made and
// removed over and over while siblings come and go, and no call may fail on the race (a Create
// must never find its customer group removed under it).
TEST_F(CgroupHostTest, ConcurrentCreateAndRemoveForOneCustomer) {
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        const std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
        auto vm = mgr_->Create("shared", id, Limits(32 * kMiB, 1));
        if (!vm.ok()) {
          ++failures;
          ADD_FAILURE() << vm.status().ToString();
          continue;
        }
        auto st = mgr_->Remove("shared", id);
        if (!st.ok()) {
          ++failures;
          ADD_FAILURE() << st.ToString();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_THAT(mgr_->ListLeftovers().value(), IsEmpty());
}

}  // namespace
}  // namespace metald::process

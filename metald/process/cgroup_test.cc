// CgroupManager against an in-memory cgroup file system: the v2, v1 and hybrid layouts, the exact
// files and values written, id validation, and undo on a failure at any single step. The real
// kernel behaviour is proven in cgroup_host_test.cc.

#include "metald/process/cgroup.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <utility>

namespace metald::process {
namespace {

using base::Status;
using base::StatusCode;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A cgroup-like file system: directories; files written by the manager; control files that
// "exist" in every directory whose base name is in `control_files`; rmdir of a directory with
// child directories fails with EBUSY as in cgroupfs.
class FakeCgroupFs : public CgroupFs {
 public:
  std::set<std::string> dirs;
  std::map<std::string, std::string> files;
  std::set<std::string> control_files = {"memory.swap.max", "memory.oom.group",
                                         "memory.memsw.limit_in_bytes"};
  std::vector<std::pair<std::string, std::string>> writes;
  // Writes to paths ending in this fail with invalid_argument (EINVAL from the kernel).
  std::string fail_write_suffix;
  // MakeDir of a path ending in this fails.
  std::string fail_mkdir_suffix;
  // The next `busy_removes` RemoveDir calls fail with EBUSY.
  int busy_removes = 0;

  Status MakeDir(const std::string& path) override {
    if (dirs.count(path)) return base::AlreadyExistsError("mkdir " + path);
    if (!fail_mkdir_suffix.empty() && path.ends_with(fail_mkdir_suffix))
      return base::PermissionDeniedError("mkdir " + path + ": injected");
    if (!dirs.count(Parent(path))) return base::NotFoundError("mkdir " + path);
    dirs.insert(path);
    return base::OkStatus();
  }
  Status RemoveDir(const std::string& path) override {
    if (!dirs.count(path)) return base::NotFoundError("rmdir " + path);
    if (busy_removes > 0) {
      --busy_removes;
      return base::UnavailableError("rmdir " + path + ": busy");
    }
    for (const std::string& d : dirs)
      if (d.starts_with(path + "/")) return base::UnavailableError("rmdir " + path + ": children");
    dirs.erase(path);
    for (auto it = files.begin(); it != files.end();)
      it = it->first.starts_with(path + "/") ? files.erase(it) : std::next(it);
    return base::OkStatus();
  }
  Status WriteFile(const std::string& path, std::string_view value) override {
    if (!fail_write_suffix.empty() && path.ends_with(fail_write_suffix))
      return base::InvalidArgumentError("write " + path + ": injected");
    if (!dirs.count(Parent(path))) return base::NotFoundError("open " + path);
    writes.emplace_back(path, std::string(value));
    files[path] = std::string(value);
    return base::OkStatus();
  }
  base::Result<std::string> ReadFile(const std::string& path) override {
    auto it = files.find(path);
    if (it != files.end()) return it->second;
    if (Base(path) == "cgroup.procs" && dirs.count(Parent(path))) return std::string();
    if (Base(path) == "memory.limit_in_bytes" && dirs.count(Parent(path)))
      return std::string("9223372036854771712\n");
    return base::NotFoundError("open " + path);
  }
  bool Exists(const std::string& path) override {
    return dirs.count(path) || files.count(path) ||
           (control_files.count(Base(path)) && dirs.count(Parent(path)));
  }
  base::Result<std::vector<std::string>> ListDirs(const std::string& path) override {
    if (!dirs.count(path)) return base::NotFoundError("opendir " + path);
    std::vector<std::string> out;
    for (const std::string& d : dirs)
      if (Parent(d) == path) out.push_back(Base(d));
    return out;
  }

  std::string Get(const std::string& path) const {
    auto it = files.find(path);
    return it == files.end() ? "<unset>" : it->second;
  }
  // Index of the first write of `value` to `path`, or -1.
  int WriteIndex(const std::string& path, const std::string& value) const {
    for (size_t i = 0; i < writes.size(); ++i)
      if (writes[i].first == path && writes[i].second == value) return static_cast<int>(i);
    return -1;
  }

 private:
  static std::string Parent(const std::string& p) { return p.substr(0, p.rfind('/')); }
  static std::string Base(const std::string& p) { return p.substr(p.rfind('/') + 1); }
};

constexpr uint64_t kMiB = 1024 * 1024;

CgroupLimits Limits(uint64_t memory_bytes, uint32_t vcpus, int64_t pids_max = 0) {
  CgroupLimits l;
  l.memory_bytes = memory_bytes;
  l.vcpus = vcpus;
  l.pids_max = pids_max;
  return l;
}

class CgroupFakeTest : public ::testing::Test {
 protected:
  void SetUpV2(const std::string& controllers) {
    fs_.files["/mounts"] = "cgroup2 /cg cgroup2 rw,nosuid 0 0\n";
    fs_.dirs.insert("/cg");
    fs_.files["/cg/cgroup.controllers"] = controllers + "\n";
  }
  void SetUpV1(bool with_blkio) {
    fs_.files["/mounts"] =
        "proc /proc proc rw 0 0\n"
        "cgroup /v1/memory cgroup rw,relatime,memory 0 0\n"
        "cgroup /v1/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0\n"
        "cgroup /v1/pids cgroup rw,relatime,pids 0 0\n"
        "cgroup /v1/systemd cgroup rw,relatime,name=systemd 0 0\n"
        "cgroup2 /v1/unified cgroup2 rw,relatime 0 0\n" +
        std::string(with_blkio ? "cgroup /v1/blkio cgroup rw,blkio 0 0\n" : "");
    for (const char* d : {"/v1", "/v1/memory", "/v1/cpu,cpuacct", "/v1/pids", "/v1/systemd",
                          "/v1/unified", "/v1/blkio"})
      fs_.dirs.insert(d);
    fs_.files["/v1/unified/cgroup.controllers"] = "hugetlb\n";
  }
  base::Result<std::unique_ptr<CgroupManager>> Open(double ratio = 1.0) {
    CgroupOptions o;
    o.root_name = "metald-t";
    o.mounts_file = "/mounts";
    o.cpu_ratio = ratio;
    o.fs = &fs_;
    return CgroupManager::Open(o);
  }

  FakeCgroupFs fs_;
};

TEST_F(CgroupFakeTest, V2WritesEveryLimitAndEnablesControllersDownTheTree) {
  SetUpV2("cpuset cpu io memory hugetlb pids");
  auto mgr = Open();
  ASSERT_TRUE(mgr.ok()) << mgr.status().ToString();
  EXPECT_EQ((*mgr)->version("memory"), CgroupVersion::kV2);
  EXPECT_EQ((*mgr)->version("io"), CgroupVersion::kV2);
  EXPECT_EQ((*mgr)->version("cpuacct"), CgroupVersion::kNone);
  EXPECT_EQ((*mgr)->Mode(), "memory=v2(/cg) cpu=v2(/cg) pids=v2(/cg) io=v2(/cg) cpuacct=none");
  EXPECT_THAT((*mgr)->RootDirs(), ElementsAre("/cg/metald-t"));
  for (const char* c : {"+memory", "+cpu", "+pids", "+io"}) {
    EXPECT_GE(fs_.WriteIndex("/cg/cgroup.subtree_control", c), 0) << c;
    EXPECT_GE(fs_.WriteIndex("/cg/metald-t/cgroup.subtree_control", c), 0) << c;
  }

  CgroupLimits limits{.memory_bytes = 64 * kMiB,
                      .vcpus = 2,
                      .pids_max = 0,
                      .io = {{.major = 254, .minor = 0, .read_bps = 1000, .write_iops = 7}}};
  auto vm = (*mgr)->Create("cust", "vm1", limits);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_THAT(vm->dirs, ElementsAre("/cg/metald-t/cust/vm1"));
  EXPECT_THAT(vm->procs_files, ElementsAre("/cg/metald-t/cust/vm1/cgroup.procs"));
  const std::string d = "/cg/metald-t/cust/vm1/";
  EXPECT_EQ(fs_.Get(d + "memory.max"), "67108864");
  EXPECT_EQ(fs_.Get(d + "memory.swap.max"), "0");
  EXPECT_EQ(fs_.Get(d + "memory.oom.group"), "1");
  EXPECT_EQ(fs_.Get(d + "cpu.max"), "200000 100000");
  EXPECT_EQ(fs_.Get(d + "pids.max"), "1024");
  EXPECT_EQ(fs_.Get(d + "io.max"), "254:0 rbps=1000 wbps=max riops=max wiops=7");
  EXPECT_GE(fs_.WriteIndex("/cg/metald-t/cust/cgroup.subtree_control", "+memory"), 0);

  EXPECT_TRUE((*mgr)->Remove("cust", "vm1").ok());
  EXPECT_FALSE(fs_.dirs.count("/cg/metald-t/cust"));
  EXPECT_TRUE((*mgr)->RemoveRoot().ok());
  EXPECT_FALSE(fs_.dirs.count("/cg/metald-t"));
}

TEST_F(CgroupFakeTest, V1UsesOneGroupPerMountAndKeepsMemswAboveTheLimit) {
  SetUpV1(/*with_blkio=*/true);
  auto mgr = Open(/*ratio=*/0.5);
  ASSERT_TRUE(mgr.ok()) << mgr.status().ToString();
  EXPECT_EQ((*mgr)->Mode(),
            "memory=v1(/v1/memory) cpu=v1(/v1/cpu,cpuacct) pids=v1(/v1/pids) io=v1(/v1/blkio) "
            "cpuacct=v1(/v1/cpu,cpuacct)");
  auto vm = (*mgr)->Create("cust", "vm1",
                           {.memory_bytes = 32 * kMiB,
                            .vcpus = 2,
                            .pids_max = -1,
                            .io = {{.major = 8, .minor = 16, .write_bps = 5000}}});
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_THAT(vm->dirs,
              ElementsAre("/v1/memory/metald-t/cust/vm1", "/v1/cpu,cpuacct/metald-t/cust/vm1",
                          "/v1/pids/metald-t/cust/vm1", "/v1/blkio/metald-t/cust/vm1"));
  const std::string mem = "/v1/memory/metald-t/cust/vm1/";
  EXPECT_EQ(fs_.Get(mem + "memory.limit_in_bytes"), "33554432");
  EXPECT_EQ(fs_.Get(mem + "memory.memsw.limit_in_bytes"), "33554432");
  // Lowering from unlimited: the limit goes first, or the kernel rejects memsw < limit.
  EXPECT_LT(fs_.WriteIndex(mem + "memory.limit_in_bytes", "33554432"),
            fs_.WriteIndex(mem + "memory.memsw.limit_in_bytes", "33554432"));
  EXPECT_EQ(fs_.Get("/v1/cpu,cpuacct/metald-t/cust/vm1/cpu.cfs_period_us"), "100000");
  EXPECT_EQ(fs_.Get("/v1/cpu,cpuacct/metald-t/cust/vm1/cpu.cfs_quota_us"), "100000");
  EXPECT_EQ(fs_.Get("/v1/pids/metald-t/cust/vm1/pids.max"), "max");
  EXPECT_EQ(fs_.Get("/v1/blkio/metald-t/cust/vm1/blkio.throttle.write_bps_device"), "8:16 5000");
  EXPECT_EQ(fs_.Get("/v1/blkio/metald-t/cust/vm1/blkio.throttle.read_bps_device"), "<unset>");
  // Nothing is ever enabled or created in the controller-less v2 tree.
  for (const auto& [path, value] : fs_.writes) EXPECT_FALSE(path.starts_with("/v1/unified"));
}

TEST_F(CgroupFakeTest, HybridPlacesEachControllerWhereItLives) {
  SetUpV1(/*with_blkio=*/false);
  fs_.files["/v1/unified/cgroup.controllers"] = "memory pids\n";
  auto mgr = Open();
  ASSERT_TRUE(mgr.ok()) << mgr.status().ToString();
  EXPECT_EQ((*mgr)->Mode(),
            "memory=v2(/v1/unified) cpu=v1(/v1/cpu,cpuacct) pids=v2(/v1/unified) io=none "
            "cpuacct=v1(/v1/cpu,cpuacct)");
  auto vm = (*mgr)->Create("c", "v", Limits(kMiB, 1));
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_THAT(vm->dirs, ElementsAre("/v1/unified/metald-t/c/v", "/v1/cpu,cpuacct/metald-t/c/v"));
  EXPECT_EQ(fs_.Get("/v1/unified/metald-t/c/v/memory.max"), "1048576");
  auto io = (*mgr)->Create("c", "w", {.memory_bytes = kMiB, .vcpus = 1, .io = {{.major = 1}}});
  EXPECT_EQ(io.status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(CgroupFakeTest, MissingControllerIsUnavailableWithAClearMessage) {
  SetUpV1(false);
  fs_.files["/mounts"] =
      "cgroup /v1/memory cgroup rw,memory 0 0\ncgroup /v1/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n"
      "cgroup2 /v1/unified cgroup2 rw 0 0\n";
  auto mgr = Open();
  ASSERT_EQ(mgr.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(mgr.status().message(), HasSubstr("pids"));
  EXPECT_THAT(mgr.status().message(), HasSubstr("/v1/unified"));
}

TEST_F(CgroupFakeTest, RejectsBadOptionsAndIds) {
  SetUpV2("cpu memory pids");
  CgroupOptions o;
  o.mounts_file = "/mounts";
  o.fs = &fs_;
  for (const char* bad : {"", "..", "a/b", "tasks", "a.b"}) {
    o.root_name = bad;
    EXPECT_EQ(CgroupManager::Open(o).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  o.root_name = "ok";
  o.parent = "../etc";
  EXPECT_EQ(CgroupManager::Open(o).status().code(), StatusCode::kInvalidArgument);
  o.parent = "system.slice/metald.service";
  fs_.dirs.insert("/cg/system.slice");
  fs_.dirs.insert("/cg/system.slice/metald.service");
  fs_.files["/cg/system.slice/metald.service/cgroup.controllers"] = "cpu memory pids";
  auto delegated = CgroupManager::Open(o);
  ASSERT_TRUE(delegated.ok()) << delegated.status().ToString();
  EXPECT_THAT((*delegated)->RootDirs(), ElementsAre("/cg/system.slice/metald.service/ok"));
  o.parent = "";
  o.cpu_ratio = 0;
  EXPECT_EQ(CgroupManager::Open(o).status().code(), StatusCode::kInvalidArgument);
  o.cpu_ratio = 1;
  o.cpu_period_us = 10;
  EXPECT_EQ(CgroupManager::Open(o).status().code(), StatusCode::kInvalidArgument);

  auto mgr = Open();
  ASSERT_TRUE(mgr.ok());
  const size_t dirs_before = fs_.dirs.size();
  CgroupLimits ok = Limits(kMiB, 1);
  for (const char* bad : {"", "..", "../x", "a/b", "a b", "tasks", "release_agent",
                          "0123456789012345678901234567890123456789012345678901234567890123456"}) {
    EXPECT_EQ((*mgr)->Create(bad, "vm", ok).status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ((*mgr)->Create("c", bad, ok).status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ((*mgr)->Remove("c", bad).code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ((*mgr)->Create("c", "v", Limits(0, 1)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*mgr)->Create("c", "v", Limits(kMiB, 0)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(fs_.dirs.size(), dirs_before);
}

// Fails each step of Create in turn: nothing it made may remain, and a customer group that holds
// another VM must survive.
TEST_F(CgroupFakeTest, FailureAtAnyStepLeavesNothingBehind) {
  SetUpV1(/*with_blkio=*/true);
  auto mgr = Open();
  ASSERT_TRUE(mgr.ok()) << mgr.status().ToString();
  ASSERT_TRUE((*mgr)->SetCustomerLimits("cust", {.memory_bytes = 512 * kMiB, .cpus = 4}).ok());
  CgroupLimits limits{.memory_bytes = 32 * kMiB,
                      .vcpus = 1,
                      .pids_max = 16,
                      .io = {{.major = 8, .minor = 0, .read_bps = 1, .write_bps = 2}}};
  const std::vector<std::string> write_steps = {"cust/memory.limit_in_bytes",
                                                "cust/cpu.cfs_quota_us",
                                                "vm1/memory.limit_in_bytes",
                                                "vm1/memory.memsw.limit_in_bytes",
                                                "vm1/cpu.cfs_period_us",
                                                "vm1/cpu.cfs_quota_us",
                                                "vm1/pids.max",
                                                "vm1/blkio.throttle.read_bps_device",
                                                "vm1/blkio.throttle.write_bps_device"};
  const std::vector<std::string> mkdir_steps = {
      "/v1/memory/metald-t/cust", "/v1/pids/metald-t/cust/vm1", "/v1/blkio/metald-t/cust/vm1"};
  for (bool other_vm : {false, true}) {
    if (other_vm) {
      ASSERT_TRUE((*mgr)->Create("cust", "other", limits).ok());
    }
    auto before = (*mgr)->ListLeftovers();
    ASSERT_TRUE(before.ok());
    for (const std::string& step : write_steps) {
      fs_.fail_write_suffix = step;
      auto vm = (*mgr)->Create("cust", "vm1", limits);
      fs_.fail_write_suffix.clear();
      if (other_vm && step.starts_with("cust/")) {
        // An existing customer group is not rewritten, so this step is never reached.
        ASSERT_TRUE(vm.ok()) << step;
        ASSERT_TRUE((*mgr)->Remove("cust", "vm1").ok());
        continue;
      }
      ASSERT_FALSE(vm.ok()) << step;
      EXPECT_THAT(vm.status().message(), HasSubstr(step)) << step;
      EXPECT_THAT(vm.status().message(), HasSubstr("Cgroup for VM cust/vm1")) << step;
      EXPECT_EQ((*mgr)->ListLeftovers().value(), *before) << step;
    }
    for (const std::string& step : mkdir_steps) {
      fs_.fail_mkdir_suffix = step;
      auto vm = (*mgr)->Create("cust", "vm1", limits);
      fs_.fail_mkdir_suffix.clear();
      if (other_vm && step == "/v1/memory/metald-t/cust") {
        EXPECT_TRUE(vm.ok()) << step;  // exists already (EEXIST), so the fault never fires
        ASSERT_TRUE((*mgr)->Remove("cust", "vm1").ok());
        continue;
      }
      ASSERT_FALSE(vm.ok()) << step;
      EXPECT_EQ(vm.status().code(), StatusCode::kPermissionDenied);
      EXPECT_EQ((*mgr)->ListLeftovers().value(), *before) << step;
    }
  }
  // With no fault the same call succeeds, and the customer group got its stored caps.
  ASSERT_TRUE((*mgr)->Create("cust", "vm1", limits).ok());
  EXPECT_EQ(fs_.Get("/v1/memory/metald-t/cust/memory.limit_in_bytes"), "536870912");
  ASSERT_TRUE((*mgr)->Remove("cust", "vm1").ok());
  ASSERT_TRUE((*mgr)->Remove("cust", "other").ok());
  EXPECT_THAT((*mgr)->ListLeftovers().value(), IsEmpty());
}

TEST_F(CgroupFakeTest, CreateTwiceIsAlreadyExistsAndKeepsTheFirst) {
  SetUpV2("cpu memory pids");
  auto mgr = Open();
  ASSERT_TRUE(mgr.ok());
  ASSERT_TRUE((*mgr)->Create("c", "v", Limits(kMiB, 1)).ok());
  auto again = (*mgr)->Create("c", "v", Limits(2 * kMiB, 1));
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  EXPECT_TRUE(fs_.dirs.count("/cg/metald-t/c/v"));
  EXPECT_EQ(fs_.Get("/cg/metald-t/c/v/memory.max"), "1048576");
  EXPECT_TRUE((*mgr)->Lookup("c", "v").ok());
  EXPECT_EQ((*mgr)->Lookup("c", "nope").status().code(), StatusCode::kNotFound);
}

TEST_F(CgroupFakeTest, V1CpuQuotaIsClampedToTheCustomerCap) {
  SetUpV1(false);
  auto mgr = Open();
  ASSERT_TRUE(mgr.ok());
  ASSERT_TRUE((*mgr)->SetCustomerLimits("c", {.cpus = 1.5}).ok());
  ASSERT_TRUE((*mgr)->Create("c", "v", Limits(kMiB, 4)).ok());
  EXPECT_EQ(fs_.Get("/v1/cpu,cpuacct/metald-t/c/cpu.cfs_quota_us"), "150000");
  EXPECT_EQ(fs_.Get("/v1/cpu,cpuacct/metald-t/c/v/cpu.cfs_quota_us"), "150000");
  // Lifting the cap writes "unlimited" to the existing group.
  ASSERT_TRUE((*mgr)->SetCustomerLimits("c", {}).ok());
  EXPECT_EQ(fs_.Get("/v1/cpu,cpuacct/metald-t/c/cpu.cfs_quota_us"), "-1");
  EXPECT_EQ(fs_.Get("/v1/memory/metald-t/c/memory.limit_in_bytes"), "-1");
}

TEST_F(CgroupFakeTest, DefaultCustomerLimitsApplyUntilSetCustomerLimits) {
  SetUpV1(false);
  CgroupOptions o;
  o.root_name = "metald-t";
  o.mounts_file = "/mounts";
  o.fs = &fs_;
  o.default_customer_limits = {.memory_bytes = 256 * kMiB, .cpus = 2};
  auto mgr = CgroupManager::Open(o);
  ASSERT_TRUE(mgr.ok()) << mgr.status().ToString();
  ASSERT_TRUE((*mgr)->Create("c", "v", Limits(kMiB, 4)).ok());
  EXPECT_EQ(fs_.Get("/v1/memory/metald-t/c/memory.limit_in_bytes"), std::to_string(256 * kMiB));
  EXPECT_EQ(fs_.Get("/v1/cpu,cpuacct/metald-t/c/cpu.cfs_quota_us"), "200000");
  // The VM's own quota is clamped to its customer's default cap (v1 refuses more).
  EXPECT_EQ(fs_.Get("/v1/cpu,cpuacct/metald-t/c/v/cpu.cfs_quota_us"), "200000");
  // A customer's own caps replace the default.
  ASSERT_TRUE((*mgr)->SetCustomerLimits("d", {.cpus = 3}).ok());
  ASSERT_TRUE((*mgr)->Create("d", "w", Limits(kMiB, 4)).ok());
  EXPECT_EQ(fs_.Get("/v1/cpu,cpuacct/metald-t/d/cpu.cfs_quota_us"), "300000");
  EXPECT_EQ(fs_.Get("/v1/memory/metald-t/d/memory.limit_in_bytes"), "-1");
}

TEST_F(CgroupFakeTest, RemoveRefusesWhileProcessesRemainAndRetriesBusy) {
  SetUpV2("cpu memory pids");
  auto mgr = Open();
  ASSERT_TRUE(mgr.ok());
  ASSERT_TRUE((*mgr)->Create("c", "v", Limits(kMiB, 1)).ok());
  fs_.files["/cg/metald-t/c/v/cgroup.procs"] = "123\n456\n";
  Status st = (*mgr)->Remove("c", "v");
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("123 456"));
  EXPECT_TRUE(fs_.dirs.count("/cg/metald-t/c/v"));
  fs_.files.erase("/cg/metald-t/c/v/cgroup.procs");
  fs_.busy_removes = 3;
  EXPECT_TRUE((*mgr)->Remove("c", "v").ok());
  EXPECT_FALSE(fs_.dirs.count("/cg/metald-t/c/v"));
  EXPECT_FALSE(fs_.dirs.count("/cg/metald-t/c"));
  EXPECT_TRUE((*mgr)->Remove("c", "v").ok());  // idempotent
}

}  // namespace
}  // namespace metald::process

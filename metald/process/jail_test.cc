// PrepareJail / RemoveJail on the real filesystem (root only) and UidAllocator.

#include "metald/process/jail.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "metald/process/jail_elf.h"
#include "metald/process/testing/fault_jail_ops.h"

namespace metald::process {
namespace {

namespace fs = std::filesystem;

TEST(UidAllocatorTest, HandsOutDistinctUidsAndReusesLast) {
  UidAllocator a(900000, 900002);
  base::Result<uid_t> u1 = a.Allocate("vm-1");
  base::Result<uid_t> u2 = a.Allocate("vm-2");
  base::Result<uid_t> u3 = a.Allocate("vm-3");
  ASSERT_TRUE(u1.ok() && u2.ok() && u3.ok());
  EXPECT_EQ(std::set<uid_t>({*u1, *u2, *u3}), std::set<uid_t>({900000, 900001, 900002}));
  // Idempotent for a VM that holds one.
  EXPECT_EQ(*a.Allocate("vm-2"), *u2);
  base::Result<uid_t> full = a.Allocate("vm-4");
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), base::StatusCode::kResourceExhausted);
  a.Release("vm-2");
  EXPECT_FALSE(a.Find("vm-2").has_value());
  EXPECT_EQ(*a.Allocate("vm-4"), *u2);  // The only free one.
  EXPECT_EQ(a.InUse(), 3u);
}

TEST(UidAllocatorTest, RoundRobinAvoidsImmediateReuse) {
  UidAllocator a(100, 199);
  uid_t first = *a.Allocate("a");
  a.Release("a");
  uid_t second = *a.Allocate("b");
  EXPECT_NE(first, second);
}

TEST(UidAllocatorTest, ReserveForAdoption) {
  UidAllocator a(100, 199);
  EXPECT_TRUE(a.Reserve("old", 150).ok());
  EXPECT_TRUE(a.Reserve("old", 150).ok());
  EXPECT_EQ(a.Reserve("other", 150).code(), base::StatusCode::kAlreadyExists);
  EXPECT_EQ(a.Reserve("old", 151).code(), base::StatusCode::kAlreadyExists);
  EXPECT_EQ(a.Reserve("x", 99).code(), base::StatusCode::kInvalidArgument);
  for (int i = 0; i < 99; ++i) {
    base::Result<uid_t> u = a.Allocate("vm" + std::to_string(i));
    ASSERT_TRUE(u.ok());
    EXPECT_NE(*u, 150u);
  }
  EXPECT_FALSE(a.Allocate("one-too-many").ok());
}

TEST(JailLayoutTest, RejectsUnsafeLayouts) {
  JailLayout ok;
  ok.base = "/tmp/metald-never-created";
  ok.vm_id = "vm-1";
  ok.uid = ok.gid = 900123;
  auto code = [](const JailLayout& l) { return PrepareJail(l).status().code(); };
  JailLayout l = ok;
  l.vm_id = "..";
  EXPECT_EQ(code(l), base::StatusCode::kInvalidArgument);
  l = ok;
  l.vm_id = "a/b";
  EXPECT_EQ(code(l), base::StatusCode::kInvalidArgument);
  l = ok;
  l.uid = 0;
  EXPECT_EQ(code(l), base::StatusCode::kInvalidArgument);
  l = ok;
  l.base = "relative";
  EXPECT_EQ(code(l), base::StatusCode::kInvalidArgument);
  l = ok;
  l.files = {{"/bin/busybox", "/a/../../etc/passwd", false}};
  EXPECT_EQ(code(l), base::StatusCode::kInvalidArgument);
  l = ok;
  l.files = {{"/bin", "/bin", false}};  // Not a regular file.
  EXPECT_EQ(code(l), base::StatusCode::kInvalidArgument);
  l = ok;
  l.devices = {{"/etc/passwd", 0600, true}};
  EXPECT_EQ(code(l), base::StatusCode::kInvalidArgument);
  l = ok;
  l.devices = {{"/dev/shm", 0600, true}};  // Not a character device.
  EXPECT_EQ(code(l), base::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(ok.base));
}

// Lists every path below `dir` (relative), for before/after comparisons.
std::set<std::string> Tree(const std::string& dir) {
  std::set<std::string> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    out.insert(fs::relative(it->path(), dir).string());
  }
  return out;
}

class JailFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mount, mknod, chown)";
    char tmpl[] = "/tmp/metald-jail-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = std::string(tmpl) + "/jails";
    // A file on another filesystem (tmpfs): it cannot be hard linked and must be bind mounted.
    shm_file_ = "/dev/shm/metald-jail-test-" + std::to_string(::getpid());
    std::ofstream(shm_file_) << "initrd bytes";
    ::chmod(shm_file_.c_str(), 0644);
    layout_.base = base_;
    layout_.vm_id = "vm-test";
    layout_.uid = layout_.gid = 912345;
    layout_.files = {{"/bin/busybox", "/bin/busybox", false},
                     {shm_file_, "/vm/initrd", false},
                     {shm_file_, "/vm/disk", true}};
    // A symlink source: the jail gets the file it names.
    link_ = std::string(tmpl) + "/busybox-link";
    ASSERT_EQ(::symlink("/bin/busybox", link_.c_str()), 0);
    layout_.files.push_back({link_, "/sbin/via-link", false});
    state_ = std::string(tmpl) + "/state";
    ASSERT_EQ(::mkdir(state_.c_str(), 0700), 0);
    std::ofstream(state_ + "/existing") << "state";
    layout_.dirs = {{state_, "/run/vm", true}, {state_, "/ro/vm", false}};
    layout_.devices = StandardJailDevices(/*tun=*/true, /*kvm=*/false);
    layout_.vm_dirs = {"/run/own"};
  }
  void TearDown() override {
    if (::geteuid() != 0) return;
    (void)RemoveJail(base_, layout_.vm_id);
    ::unlink(shm_file_.c_str());
    std::error_code ec;
    fs::remove_all(fs::path(base_).parent_path(), ec);
  }

  std::string base_;
  std::string shm_file_;
  std::string link_;
  std::string state_;
  JailLayout layout_;
};

TEST_F(JailFsTest, BuildsLinksMountsDevicesAndRemovesEverything) {
  base::Result<PreparedJail> jail = PrepareJail(layout_);
  ASSERT_TRUE(jail.ok()) << jail.status().ToString();
  EXPECT_EQ(jail->root, base_ + "/vm-test/root");
  EXPECT_FALSE(jail->steps.empty());

  // Same filesystem: a hard link (same inode), never a copy.
  struct stat src, dst;
  ASSERT_EQ(::stat("/bin/busybox", &src), 0);
  ASSERT_EQ(::stat(jail->Outside("/bin/busybox").c_str(), &dst), 0);
  EXPECT_EQ(src.st_ino, dst.st_ino);
  EXPECT_EQ(src.st_dev, dst.st_dev);

  // Another filesystem: bind mounts; the read-only one refuses writes, the writable one accepts.
  std::vector<std::string> mounts = MountsUnder(jail->dir);
  EXPECT_EQ(std::set<std::string>(mounts.begin(), mounts.end()),
            std::set<std::string>({jail->Outside("/vm/initrd"), jail->Outside("/vm/disk"),
                                   jail->Outside("/run/vm"), jail->Outside("/ro/vm")}));
  ASSERT_EQ(::stat(jail->Outside("/sbin/via-link").c_str(), &dst), 0);
  EXPECT_EQ(src.st_ino, dst.st_ino);
  struct stat lst;
  ASSERT_EQ(::lstat(jail->Outside("/sbin/via-link").c_str(), &lst), 0);
  EXPECT_TRUE(S_ISREG(lst.st_mode));
  // The state directory: what the jail writes shows up outside; the read-only view refuses.
  std::ofstream(jail->Outside("/run/vm/new")) << "from inside";
  EXPECT_TRUE(fs::exists(state_ + "/new"));
  EXPECT_TRUE(fs::exists(jail->Outside("/ro/vm/existing")));
  EXPECT_LT(::open(jail->Outside("/ro/vm/other").c_str(), O_WRONLY | O_CREAT, 0600), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_LT(::open(jail->Outside("/vm/initrd").c_str(), O_WRONLY), 0);
  EXPECT_EQ(errno, EROFS);
  int fd = ::open(jail->Outside("/vm/disk").c_str(), O_WRONLY | O_APPEND);
  EXPECT_GE(fd, 0);
  if (fd >= 0) ::close(fd);
  std::ifstream in(jail->Outside("/vm/initrd"));
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "initrd bytes");

  // Device nodes with the host's numbers; tun belongs to the VM, null to root.
  struct stat host_tun, tun, null;
  ASSERT_EQ(::stat("/dev/net/tun", &host_tun), 0);
  ASSERT_EQ(::stat(jail->Outside("/dev/net/tun").c_str(), &tun), 0);
  EXPECT_TRUE(S_ISCHR(tun.st_mode));
  EXPECT_EQ(tun.st_rdev, host_tun.st_rdev);
  EXPECT_EQ(tun.st_uid, 912345u);
  EXPECT_EQ(tun.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat(jail->Outside("/dev/null").c_str(), &null), 0);
  EXPECT_EQ(null.st_uid, 0u);
  EXPECT_EQ(null.st_mode & 07777, 0666u);
  EXPECT_FALSE(fs::exists(jail->Outside("/dev/kvm")));

  // The VM's own directory; the root stays root's.
  struct stat run, root;
  ASSERT_EQ(::stat(jail->Outside("/run/own").c_str(), &run), 0);
  EXPECT_EQ(run.st_uid, 912345u);
  EXPECT_EQ(run.st_gid, 912345u);
  EXPECT_EQ(run.st_mode & 07777, 0700u);
  ASSERT_EQ(::stat(jail->root.c_str(), &root), 0);
  EXPECT_EQ(root.st_uid, 0u);
  EXPECT_EQ(root.st_mode & 07777, 0755u);

  // A second jail for the same VM is refused (remove first).
  EXPECT_EQ(PrepareJail(layout_).status().code(), base::StatusCode::kAlreadyExists);

  // Removal from the VM id alone; the originals survive.
  ASSERT_TRUE(RemoveJail(base_, "vm-test").ok());
  EXPECT_FALSE(fs::exists(jail->dir));
  EXPECT_TRUE(MountsUnder(jail->dir).empty());
  EXPECT_TRUE(MountsUnder(base_).empty());
  EXPECT_TRUE(fs::exists("/bin/busybox"));
  // The bind-mounted state directory keeps its contents.
  EXPECT_TRUE(fs::exists(state_ + "/existing"));
  EXPECT_TRUE(fs::exists(state_ + "/new"));
  std::ifstream again(shm_file_);
  std::getline(again, content);
  EXPECT_EQ(content, "initrd bytes");
  // Idempotent.
  EXPECT_TRUE(RemoveJail(base_, "vm-test").ok());
}

TEST_F(JailFsTest, RemoveAfterCrashWithStackedMounts) {
  base::Result<PreparedJail> jail = PrepareJail(layout_);
  ASSERT_TRUE(jail.ok()) << jail.status().ToString();
  // A crashed earlier attempt may have left a second mount on the same point.
  ASSERT_EQ(
      ::mount(shm_file_.c_str(), jail->Outside("/vm/initrd").c_str(), nullptr, MS_BIND, nullptr),
      0);
  EXPECT_EQ(MountsUnder(jail->dir).size(), 5u);  // initrd twice, disk, two directories.
  ASSERT_TRUE(RemoveJail(base_, "vm-test").ok());
  EXPECT_FALSE(fs::exists(jail->dir));
  EXPECT_TRUE(MountsUnder(jail->dir).empty());
}

TEST_F(JailFsTest, EveryBuildStepFailsCleanly) {
  // Count the steps of a successful build first.
  testing::FaultJailOps counter(SystemJailOps());
  base::Result<PreparedJail> ok = PrepareJail(layout_, &counter);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  ASSERT_TRUE(RemoveJail(base_, layout_.vm_id).ok());
  const int steps = counter.build_calls;
  const std::vector<std::string> names = counter.names;
  // mkdir+chmod of dir and root, files, devices, vm dir: well above a dozen.
  ASSERT_GT(steps, 20);
  std::set<std::string> kinds(names.begin(), names.end());
  for (const char* k : {"mkdir", "chmod", "chown", "link", "create mount point", "mount --bind",
                        "mount -o remount,bind,ro", "mknod"}) {
    EXPECT_TRUE(kinds.count(k)) << k;
  }

  std::set<std::string> tree_before = Tree(base_);
  for (int i = 0; i < steps; ++i) {
    SCOPED_TRACE("failing build step " + std::to_string(i) + " (" + names[i] + ")");
    testing::FaultJailOps ops(SystemJailOps());
    ops.fail_at = i;
    ops.fail_errno = (i % 2 == 0) ? EIO : ENOSPC;
    base::Result<PreparedJail> r = PrepareJail(layout_, &ops);
    ASSERT_FALSE(r.ok());
    const std::string msg = r.status().message();
    EXPECT_NE(msg.find("PrepareJail vm-test: " + names[i] + " "), std::string::npos) << msg;
    EXPECT_NE(msg.find("(errno " + std::to_string(ops.fail_errno) + ")"), std::string::npos) << msg;
    // Nothing left: no file or directory of the jail, no mount anywhere new.
    EXPECT_EQ(Tree(base_), tree_before);
    EXPECT_FALSE(fs::exists(base_ + "/vm-test"));
    EXPECT_TRUE(MountsUnder(base_).empty());
  }
  // The sources are intact.
  std::ifstream in(shm_file_);
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "initrd bytes");
}

TEST(JailElfTest, InterpreterAndSharedObjects) {
  base::Result<std::string> none = ElfInterpreter("/bin/busybox");  // busybox-static.
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(*none, "");
  base::Result<std::string> interp = ElfInterpreter("/bin/ls");
  ASSERT_TRUE(interp.ok()) << interp.status().ToString();
  EXPECT_EQ(interp->rfind("/lib", 0), 0u) << *interp;
  EXPECT_NE(interp->find("ld-linux"), std::string::npos) << *interp;
  EXPECT_EQ(ElfInterpreter("/etc/passwd").status().code(), base::StatusCode::kInvalidArgument);
  EXPECT_EQ(ElfInterpreter("/no/such/file").status().code(), base::StatusCode::kNotFound);

  std::unique_ptr<ProcessSpawner> spawner = NewSystemSpawner();
  base::Result<std::vector<std::string>> objs = SharedObjects("/bin/ls", spawner.get());
  ASSERT_TRUE(objs.ok()) << objs.status().ToString();
  ASSERT_FALSE(objs->empty());
  EXPECT_EQ(objs->front(), *interp);
  bool libc = false;
  for (const std::string& o : *objs) {
    EXPECT_EQ(o[0], '/') << o;
    EXPECT_TRUE(fs::exists(o)) << o;
    if (o.find("/libc.so.6") != std::string::npos) libc = true;
  }
  EXPECT_TRUE(libc);
  base::Result<std::vector<std::string>> stat = SharedObjects("/bin/busybox", spawner.get());
  ASSERT_TRUE(stat.ok());
  EXPECT_TRUE(stat->empty());
}

}  // namespace
}  // namespace metald::process

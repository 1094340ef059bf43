// The jail directory builder (PrepareJail / RemoveJail) and the VM uid allocator.

#include "metald/process/jail.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "metald/process/jail_spec.h"

namespace metald::process {
namespace {

std::string ErrnoText(int err) {
  return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")";
}

base::Status StepError(const std::string& step, int err) {
  std::string msg = step + ": " + ErrnoText(err);
  switch (err) {
    case ENOENT:
      return base::NotFoundError(std::move(msg));
    case EEXIST:
      return base::AlreadyExistsError(std::move(msg));
    case EACCES:
    case EPERM:
      return base::PermissionDeniedError(std::move(msg));
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case EMLINK:
      return base::ResourceExhaustedError(std::move(msg));
    default:
      return base::InternalError(std::move(msg));
  }
}

int Errno(int r) { return r < 0 ? errno : 0; }

class SystemOps final : public JailOps {
 public:
  int Mkdir(const std::string& path, mode_t mode) override {
    return Errno(::mkdir(path.c_str(), mode));
  }
  int Chmod(const std::string& path, mode_t mode) override {
    return Errno(::fchmodat(AT_FDCWD, path.c_str(), mode, 0));
  }
  int Chown(const std::string& path, uid_t uid, gid_t gid) override {
    return Errno(::fchownat(AT_FDCWD, path.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW));
  }
  int Link(const std::string& source, const std::string& target) override {
    return Errno(::link(source.c_str(), target.c_str()));
  }
  int CreateFile(const std::string& path) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return errno;
    ::close(fd);
    return 0;
  }
  int BindMount(const std::string& source, const std::string& target) override {
    return Errno(::mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr));
  }
  int RemountReadOnly(const std::string& target) override {
    return Errno(::mount(nullptr, target.c_str(), nullptr,
                         MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr));
  }
  int Mknod(const std::string& path, mode_t mode, dev_t dev) override {
    return Errno(::mknod(path.c_str(), mode, dev));
  }
  int Unmount(const std::string& target) override {
    return Errno(::umount2(target.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW));
  }
  int Unlink(const std::string& path) override { return Errno(::unlink(path.c_str())); }
  int Rmdir(const std::string& path) override { return Errno(::rmdir(path.c_str())); }
};

bool SafeComponent(std::string_view s) {
  if (s.empty() || s == "." || s == ".." || s.size() > 200) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

// An absolute, normalised in-jail path: no "." / ".." components, no empty components.
bool SafeInJailPath(std::string_view p) {
  if (p.size() < 2 || p[0] != '/' || p.back() == '/') return false;
  size_t i = 1;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    std::string_view c = p.substr(i, j - i);
    if (c.empty() || c == "." || c == "..") return false;
    i = j + 1;
  }
  return true;
}

bool IsOctal(char c) { return c >= '0' && c <= '7'; }

// Decodes mountinfo's octal escapes (\040 for a space, \011, \012, \134).
std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && IsOctal(s[i + 1]) && IsOctal(s[i + 2]) &&
        IsOctal(s[i + 3])) {
      int v = (s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0');
      out += static_cast<char>(v);
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The builder's undo log. Each entry is what reverts one completed step.
class Builder {
 public:
  Builder(JailOps* ops, PreparedJail* jail) : ops_(ops), jail_(jail) {}

  // Runs one step; on success records `undo` (if any) and `what` in the jail's step list.
  base::Status Do(int err, const std::string& what,
                  std::optional<std::pair<int, std::string>> undo) {
    if (err != 0) return StepError(what, err);
    jail_->steps.push_back(what);
    if (undo) undo_.push_back(*undo);
    return base::OkStatus();
  }

  base::Status Mkdir(const std::string& path, mode_t mode) {
    RETURN_IF_ERROR(Do(ops_->Mkdir(path, mode), "mkdir " + path, std::make_pair(kRmdir, path)));
    // mkdir's mode is filtered by the process umask, which other threads may change: set it.
    return Chmod(path, mode);
  }
  base::Status Chmod(const std::string& path, mode_t mode) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode));
    return Do(ops_->Chmod(path, mode), std::string("chmod ") + buf + " " + path, std::nullopt);
  }
  base::Status Chown(const std::string& path, uid_t uid, gid_t gid) {
    return Do(ops_->Chown(path, uid, gid),
              "chown " + std::to_string(uid) + ":" + std::to_string(gid) + " " + path,
              std::nullopt);
  }

  // Creates the missing directories between the jail root and `target`'s parent (0755, root).
  base::Status Parents(const std::string& inside) {
    size_t pos = 1;
    for (;;) {
      size_t slash = inside.find('/', pos);
      if (slash == std::string::npos) return base::OkStatus();
      std::string dir = jail_->root + inside.substr(0, slash);
      if (created_dirs_.insert(dir).second) {
        struct stat st;
        if (::lstat(dir.c_str(), &st) == 0) {
          if (!S_ISDIR(st.st_mode)) {
            return base::InvalidArgumentError(dir + " exists and is not a directory");
          }
        } else {
          RETURN_IF_ERROR(Mkdir(dir, 0755));
        }
      }
      pos = slash + 1;
    }
  }

  base::Status AddFile(const JailFile& f) {
    std::string target = jail_->root + f.target;
    RETURN_IF_ERROR(Parents(f.target));
    // link() would link a symlink itself, whose target may not exist inside the jail.
    char* real = ::realpath(f.source.c_str(), nullptr);
    if (real == nullptr) return StepError("realpath " + f.source, errno);
    std::string source = real;
    std::free(real);
    int err = ops_->Link(source, target);
    if (err == 0) {
      return Do(0, "link " + source + " -> " + target, std::make_pair(kUnlink, target));
    }
    // EXDEV: another filesystem. EPERM / EMLINK: protected_hardlinks or a full link count. A bind
    // mount serves all three without copying.
    if (err != EXDEV && err != EPERM && err != EMLINK) {
      return StepError("link " + f.source + " -> " + target, err);
    }
    RETURN_IF_ERROR(Do(ops_->CreateFile(target), "create mount point " + target,
                       std::make_pair(kUnlink, target)));
    RETURN_IF_ERROR(Do(ops_->BindMount(source, target), "mount --bind " + source + " " + target,
                       std::make_pair(kUmount, target)));
    if (!f.writable) {
      RETURN_IF_ERROR(
          Do(ops_->RemountReadOnly(target), "mount -o remount,bind,ro " + target, std::nullopt));
    }
    return base::OkStatus();
  }

  base::Status AddDir(const JailDir& d) {
    RETURN_IF_ERROR(Parents(d.target));
    std::string target = jail_->root + d.target;
    if (!created_dirs_.insert(target).second) {
      return base::InvalidArgumentError("Jail directory " + d.target + " is listed twice");
    }
    RETURN_IF_ERROR(Mkdir(target, 0755));
    RETURN_IF_ERROR(Do(ops_->BindMount(d.source, target), "mount --bind " + d.source + " " + target,
                       std::make_pair(kUmount, target)));
    if (!d.writable) {
      RETURN_IF_ERROR(
          Do(ops_->RemountReadOnly(target), "mount -o remount,bind,ro " + target, std::nullopt));
    }
    return base::OkStatus();
  }

  base::Status AddDevice(const JailDevice& d, uid_t uid, gid_t gid) {
    struct stat st;
    if (::stat(d.path.c_str(), &st) < 0) return StepError("stat " + d.path, errno);
    if (!S_ISCHR(st.st_mode)) {
      return base::InvalidArgumentError(d.path + " is not a character device");
    }
    std::string target = jail_->root + d.path;
    RETURN_IF_ERROR(Parents(d.path));
    RETURN_IF_ERROR(Do(ops_->Mknod(target, S_IFCHR | (d.mode & 07777), st.st_rdev),
                       "mknod " + target + " c " + std::to_string(major(st.st_rdev)) + " " +
                           std::to_string(minor(st.st_rdev)),
                       std::make_pair(kUnlink, target)));
    RETURN_IF_ERROR(Chmod(target, d.mode & 07777));
    if (d.owned_by_vm) RETURN_IF_ERROR(Chown(target, uid, gid));
    return base::OkStatus();
  }

  base::Status AddVmDir(const std::string& inside, uid_t uid, gid_t gid) {
    RETURN_IF_ERROR(Parents(inside));
    std::string dir = jail_->root + inside;
    if (!created_dirs_.insert(dir).second) {
      return base::InvalidArgumentError("vm_dirs lists " + inside + " twice or as a parent");
    }
    RETURN_IF_ERROR(Mkdir(dir, 0700));
    return Chown(dir, uid, gid);
  }

  // Reverts every recorded step, newest first. Best effort: a failing undo step is skipped (its
  // later rmdir will fail too and the leftover is reported by RemoveJail).
  void Undo() {
    for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) {
      switch (it->first) {
        case kRmdir:
          ops_->Rmdir(it->second);
          break;
        case kUnlink:
          ops_->Unlink(it->second);
          break;
        case kUmount:
          ops_->Unmount(it->second);
          break;
      }
    }
    undo_.clear();
  }

  enum : int { kRmdir, kUnlink, kUmount };

 private:
  JailOps* ops_;
  PreparedJail* jail_;
  std::vector<std::pair<int, std::string>> undo_;
  std::set<std::string> created_dirs_;
};

base::Status ValidateLayout(const JailLayout& l) {
  if (l.base.size() < 2 || l.base[0] != '/' || l.base.back() == '/') {
    return base::InvalidArgumentError("Jail base \"" + l.base +
                                      "\" must be an absolute path without a trailing slash");
  }
  if (!SafeComponent(l.vm_id)) {
    return base::InvalidArgumentError("VM id \"" + l.vm_id + "\" is not a safe path component");
  }
  if (l.uid == 0 || l.gid == 0) {
    return base::InvalidArgumentError("A jailed VM must not run as uid or gid 0");
  }
  std::set<std::string> targets;
  for (const JailFile& f : l.files) {
    if (f.source.empty() || f.source[0] != '/') {
      return base::InvalidArgumentError("Jail file source \"" + f.source + "\" is not absolute");
    }
    if (!SafeInJailPath(f.target)) {
      return base::InvalidArgumentError("Jail file target \"" + f.target +
                                        "\" is not a normalised absolute path");
    }
    struct stat st;
    if (::stat(f.source.c_str(), &st) < 0) return StepError("stat " + f.source, errno);
    if (!S_ISREG(st.st_mode)) {
      return base::InvalidArgumentError(f.source + " is not a regular file");
    }
    if (!targets.insert(f.target).second) {
      return base::InvalidArgumentError("Jail target " + f.target + " is listed twice");
    }
  }
  for (const JailDir& d : l.dirs) {
    if (d.source.empty() || d.source[0] != '/') {
      return base::InvalidArgumentError("Jail dir source \"" + d.source + "\" is not absolute");
    }
    if (!SafeInJailPath(d.target)) {
      return base::InvalidArgumentError("Jail dir target \"" + d.target +
                                        "\" is not a normalised absolute path");
    }
    struct stat st;
    if (::stat(d.source.c_str(), &st) < 0) return StepError("stat " + d.source, errno);
    if (!S_ISDIR(st.st_mode)) return base::InvalidArgumentError(d.source + " is not a directory");
    if (!targets.insert(d.target).second) {
      return base::InvalidArgumentError("Jail target " + d.target + " is listed twice");
    }
  }
  for (const JailDevice& d : l.devices) {
    if (!SafeInJailPath(d.path) || d.path.rfind("/dev/", 0) != 0) {
      return base::InvalidArgumentError("Device \"" + d.path + "\" is not a path under /dev");
    }
    if (!targets.insert(d.path).second) {
      return base::InvalidArgumentError("Jail target " + d.path + " is listed twice");
    }
    struct stat st;
    if (::stat(d.path.c_str(), &st) < 0) return StepError("stat " + d.path, errno);
    if (!S_ISCHR(st.st_mode)) {
      return base::InvalidArgumentError(d.path + " is not a character device");
    }
  }
  for (const std::string& v : l.vm_dirs) {
    if (!SafeInJailPath(v)) {
      return base::InvalidArgumentError("VM directory \"" + v +
                                        "\" is not a normalised absolute path");
    }
  }
  return base::OkStatus();
}

// Deletes `path` and below without following symlinks or entering another filesystem (`dev`).
base::Status RemoveTree(const std::string& path, dev_t dev, JailOps* ops) {
  struct stat st;
  if (::lstat(path.c_str(), &st) < 0) {
    if (errno == ENOENT) return base::OkStatus();
    return StepError("lstat " + path, errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    int err = ops->Unlink(path);
    if (err != 0 && err != ENOENT) return StepError("unlink " + path, err);
    return base::OkStatus();
  }
  if (st.st_dev != dev) {
    return base::FailedPreconditionError(path + " is still a mount point of another filesystem");
  }
  std::vector<std::string> children;
  {
    DIR* d = ::opendir(path.c_str());
    if (d == nullptr) return StepError("opendir " + path, errno);
    while (struct dirent* e = ::readdir(d)) {
      std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      children.emplace_back(name);
    }
    ::closedir(d);
  }
  for (const std::string& c : children) RETURN_IF_ERROR(RemoveTree(path + "/" + c, dev, ops));
  int err = ops->Rmdir(path);
  if (err != 0 && err != ENOENT) return StepError("rmdir " + path, err);
  return base::OkStatus();
}

}  // namespace

std::string_view JailStepName(JailStep step) {
  switch (step) {
    case JailStep::kNone:
      return "none";
    case JailStep::kSetns:
      return "setns net";
    case JailStep::kCgroupWrite:
      return "cgroup write";
    case JailStep::kSetrlimit:
      return "setrlimit";
    case JailStep::kChroot:
      return "chroot";
    case JailStep::kChdir:
      return "chdir";
    case JailStep::kCapBound:
      return "capability bounding set drop";
    case JailStep::kSetgroups:
      return "setgroups";
    case JailStep::kSetgid:
      return "setgid";
    case JailStep::kSetuid:
      return "setuid";
    case JailStep::kCapset:
      return "capset";
    case JailStep::kNoNewPrivs:
      return "no_new_privs";
    case JailStep::kExec:
      return "execve";
  }
  return "unknown";
}

std::vector<JailStep> AllChildJailSteps() {
  return {JailStep::kSetns,  JailStep::kCgroupWrite, JailStep::kSetrlimit,  JailStep::kChroot,
          JailStep::kChdir,  JailStep::kCapBound,    JailStep::kSetgroups,  JailStep::kSetgid,
          JailStep::kSetuid, JailStep::kCapset,      JailStep::kNoNewPrivs, JailStep::kExec};
}

std::vector<JailDevice> StandardJailDevices(bool tun, bool kvm) {
  std::vector<JailDevice> d = {{"/dev/null", 0666, false}, {"/dev/urandom", 0666, false}};
  if (tun) d.push_back({"/dev/net/tun", 0600, true});
  if (kvm) d.push_back({"/dev/kvm", 0600, true});
  return d;
}

JailOps* SystemJailOps() {
  static SystemOps* ops = new SystemOps();
  return ops;
}

base::Result<PreparedJail> PrepareJail(const JailLayout& layout, JailOps* ops) {
  RETURN_IF_ERROR(ValidateLayout(layout));
  struct stat st;
  if (::stat(layout.base.c_str(), &st) < 0) {
    if (errno != ENOENT) return StepError("stat " + layout.base, errno);
    // The base is shared by all VMs and outlives this one: created, never undone.
    std::string partial;
    for (size_t pos = 1;; ++pos) {
      pos = layout.base.find('/', pos);
      partial = layout.base.substr(0, pos);
      if (::mkdir(partial.c_str(), 0700) < 0 && errno != EEXIST) {
        return StepError("mkdir " + partial, errno);
      }
      if (pos == std::string::npos) break;
    }
  } else if (!S_ISDIR(st.st_mode)) {
    return base::InvalidArgumentError("Jail base " + layout.base + " is not a directory");
  }

  PreparedJail jail;
  jail.dir = layout.base + "/" + layout.vm_id;
  jail.root = jail.dir + "/root";
  Builder b(ops, &jail);
  base::Status st_all = [&]() -> base::Status {
    RETURN_IF_ERROR(b.Mkdir(jail.dir, 0700));
    RETURN_IF_ERROR(b.Mkdir(jail.root, 0755));
    for (const JailFile& f : layout.files) RETURN_IF_ERROR(b.AddFile(f));
    for (const JailDir& d : layout.dirs) RETURN_IF_ERROR(b.AddDir(d));
    for (const JailDevice& d : layout.devices) {
      RETURN_IF_ERROR(b.AddDevice(d, layout.uid, layout.gid));
    }
    for (const std::string& v : layout.vm_dirs)
      RETURN_IF_ERROR(b.AddVmDir(v, layout.uid, layout.gid));
    return base::OkStatus();
  }();
  if (!st_all.ok()) {
    b.Undo();
    return st_all.WithContext("PrepareJail " + layout.vm_id);
  }
  return jail;
}

std::vector<std::string> MountsUnder(std::string_view dir) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string prefix = std::string(dir) + "/";
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    std::string id, parent, devno, root, mount_point;
    ls >> id >> parent >> devno >> root >> mount_point;
    std::string mp = Unescape(mount_point);
    if (mp == dir || mp.rfind(prefix, 0) == 0) out.push_back(mp);
  }
  // Deepest first, so a mount is removed before the one it sits on.
  std::stable_sort(out.begin(), out.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return out;
}

base::Status RemoveJail(std::string_view base, std::string_view vm_id, JailOps* ops) {
  std::string ctx = "RemoveJail " + std::string(vm_id);
  if (!SafeComponent(vm_id) || base.empty() || base[0] != '/') {
    return base::InvalidArgumentError(ctx + ": bad jail base or VM id");
  }
  std::string dir = std::string(base) + "/" + std::string(vm_id);
  struct stat st;
  if (::lstat(dir.c_str(), &st) < 0) {
    if (errno == ENOENT) return base::OkStatus();
    return StepError(ctx + ": lstat " + dir, errno);
  }
  if (!S_ISDIR(st.st_mode))
    return base::FailedPreconditionError(ctx + ": " + dir + " is not a directory");
  // A file can be mounted more than once on the same point (a crash between two attempts): loop
  // until nothing is left, bounded in case an unmount keeps failing.
  for (int round = 0; round < 16; ++round) {
    std::vector<std::string> mounts = MountsUnder(dir);
    if (mounts.empty()) break;
    for (const std::string& m : mounts) {
      int err = ops->Unmount(m);
      if (err != 0 && err != EINVAL && err != ENOENT) {
        return StepError(ctx + ": umount " + m, err);
      }
    }
  }
  if (!MountsUnder(dir).empty()) {
    return base::InternalError(ctx + ": mounts remain below " + dir + " after unmounting");
  }
  return RemoveTree(dir, st.st_dev, ops).WithContext(ctx);
}

UidAllocator::UidAllocator(uid_t first, uid_t last) : first_(first), last_(last), next_(first) {}

base::Result<uid_t> UidAllocator::Allocate(std::string_view vm_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_vm_.find(vm_id);
  if (it != by_vm_.end()) return it->second;
  uint64_t size = static_cast<uint64_t>(last_) - first_ + 1;
  if (used_.size() >= size) {
    return base::ResourceExhaustedError("All " + std::to_string(size) + " VM uids (" +
                                        std::to_string(first_) + "-" + std::to_string(last_) +
                                        ") are in use");
  }
  uid_t uid = next_;
  while (used_.count(uid)) uid = uid == last_ ? first_ : uid + 1;
  next_ = uid == last_ ? first_ : uid + 1;
  used_.insert(uid);
  by_vm_.emplace(std::string(vm_id), uid);
  return uid;
}

base::Status UidAllocator::Reserve(std::string_view vm_id, uid_t uid) {
  std::lock_guard<std::mutex> lock(mu_);
  if (uid < first_ || uid > last_) {
    return base::InvalidArgumentError("uid " + std::to_string(uid) + " is outside the VM range");
  }
  auto it = by_vm_.find(vm_id);
  if (it != by_vm_.end()) {
    if (it->second == uid) return base::OkStatus();
    return base::AlreadyExistsError("VM " + std::string(vm_id) + " holds uid " +
                                    std::to_string(it->second));
  }
  if (used_.count(uid)) {
    return base::AlreadyExistsError("uid " + std::to_string(uid) + " is held by another VM");
  }
  used_.insert(uid);
  by_vm_.emplace(std::string(vm_id), uid);
  return base::OkStatus();
}

void UidAllocator::Release(std::string_view vm_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_vm_.find(vm_id);
  if (it == by_vm_.end()) return;
  used_.erase(it->second);
  by_vm_.erase(it);
}

std::optional<uid_t> UidAllocator::Find(std::string_view vm_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_vm_.find(vm_id);
  if (it == by_vm_.end()) return std::nullopt;
  return it->second;
}

size_t UidAllocator::InUse() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_.size();
}

}  // namespace metald::process

#pragma once
// FaultJailOps: JailOps that forwards to another one and fails the n-th build step on purpose
// (leveldb's EnvWrapper pattern), so a test can fail every step of PrepareJail in turn. Tests only.
//
// Build steps (counted, failable): Mkdir, Chmod, Chown, Link, CreateFile, BindMount,
// RemountReadOnly, Mknod. Undo/removal steps (Unmount, Unlink, Rmdir) are forwarded uncounted.
// Thread-safety: not thread-safe; one PrepareJail at a time.

#include <cerrno>
#include <string>
#include <vector>

#include "metald/process/jail.h"

namespace metald::process::testing {

class FaultJailOps : public JailOps {
 public:
  // `base` must outlive this object.
  explicit FaultJailOps(JailOps* base) : base_(base) {}

  // The 0-based index of the build step to fail; -1 = none. Fails with `fail_errno`.
  int fail_at = -1;
  int fail_errno = EIO;
  // Build steps seen so far (including the failed one), and their names in order.
  int build_calls = 0;
  std::vector<std::string> names;

  int Mkdir(const std::string& path, mode_t mode) override {
    if (int e = Step("mkdir")) return e;
    return base_->Mkdir(path, mode);
  }
  int Chmod(const std::string& path, mode_t mode) override {
    if (int e = Step("chmod")) return e;
    return base_->Chmod(path, mode);
  }
  int Chown(const std::string& path, uid_t uid, gid_t gid) override {
    if (int e = Step("chown")) return e;
    return base_->Chown(path, uid, gid);
  }
  int Link(const std::string& source, const std::string& target) override {
    if (int e = Step("link")) return e;
    return base_->Link(source, target);
  }
  int CreateFile(const std::string& path) override {
    if (int e = Step("create mount point")) return e;
    return base_->CreateFile(path);
  }
  int BindMount(const std::string& source, const std::string& target) override {
    if (int e = Step("mount --bind")) return e;
    return base_->BindMount(source, target);
  }
  int RemountReadOnly(const std::string& target) override {
    if (int e = Step("mount -o remount,bind,ro")) return e;
    return base_->RemountReadOnly(target);
  }
  int Mknod(const std::string& path, mode_t mode, dev_t dev) override {
    if (int e = Step("mknod")) return e;
    return base_->Mknod(path, mode, dev);
  }
  int Unmount(const std::string& target) override { return base_->Unmount(target); }
  int Unlink(const std::string& path) override { return base_->Unlink(path); }
  int Rmdir(const std::string& path) override { return base_->Rmdir(path); }

 private:
  int Step(const std::string& name) {
    names.push_back(name);
    return build_calls++ == fail_at ? fail_errno : 0;
  }

  JailOps* base_;
};

}  // namespace metald::process::testing

#pragma once
// The jail directory of one VM and the uid range VMs run as. Together with SpawnSpec::jail
// (jail_spec.h, applied in the child by the spawner) this is metald's integrated jailer.
//
// Layout. A VM's jail is <base>/<vm_id>/ (mode 0700, root) holding root/ (0755, root), the
// directory the VMM is chrooted into. PrepareJail fills root/ with exactly what the layout lists:
//   - files (kernel, initrd, disks, the VMM binary and its libraries, firmware) as hard links of
//     the originals (symlinks resolved first), or — when the original is on another filesystem —
//     as a bind mount of it onto an empty file, read-only unless the file is writable; never as a
//     copy;
//   - directories as bind mounts (the VM's state directory);
//   - device nodes made with mknod from the host node's major/minor (/dev/null, /dev/urandom,
//     /dev/net/tun, /dev/kvm when KVM is used);
//   - the VM's own directories (e.g. /run for the API socket and logs), 0700 and owned by the VM.
// Every step is recorded; when one fails the steps already done are undone in reverse order
// (umount, unlink, rmdir) and the error names the step, its path and errno.
//
// Removal needs only <base> and the VM id (RemoveJail): it unmounts whatever is mounted below the
// jail (read from /proc/self/mountinfo, so it also works after a metald crash) and deletes the
// tree without crossing into another filesystem. Deleting a hard link never touches the original.
//
// Requirements: root (CAP_SYS_ADMIN for mounts, CAP_MKNOD, CAP_CHOWN, CAP_FOWNER for links of
// files metald does not own); <base> on a filesystem mounted without nodev (the device nodes must
// work) and ideally the one holding the images, so that files are hard links rather than mounts.
//
// Thread-safety: PrepareJail / RemoveJail of different VM ids may run concurrently; for one VM id
// the caller serialises them (the service's per-VM actor). UidAllocator is internally locked.

#include <sys/types.h>

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "metald/base/status.h"

namespace metald::process {

// One file made available inside the jail.
struct JailFile {
  std::string source;  // Absolute outside path of a regular file.
  std::string target;  // Absolute path inside the jail, e.g. "/vm/kernel".
  // false: the VMM may only read it (a read-only bind mount when it cannot be hard linked).
  // true: a read-write bind mount when it cannot be hard linked. Either way the file keeps its
  // owner and mode: a writable disk must already be writable by the VM's uid (metald does not
  // chown an image it may share).
  bool writable = false;
};

// A directory made available inside the jail by a bind mount (e.g. the VM's state directory,
// where the VMM creates its API socket and console log, so metald sees them at their usual paths).
struct JailDir {
  std::string source;  // Absolute outside path of an existing directory.
  std::string target;  // Absolute path inside the jail, e.g. "/run/vm".
  // false: remounted read-only. true: read-write; the VMM can write what the directory's owner
  // and mode allow it to (chown the source to the VM first).
  bool writable = true;
};

// One device node, created at the same path inside the jail as on the host.
struct JailDevice {
  std::string path;         // Host character device, e.g. "/dev/net/tun".
  mode_t mode = 0600;       // Permission bits of the jail's node.
  bool owned_by_vm = true;  // true: chown to the VM's uid/gid; false: stays root's.
};

// /dev/null and /dev/urandom (0666, root), plus /dev/net/tun (0600, the VM's) when `tun`, plus
// /dev/kvm (0600, the VM's) when `kvm`.
std::vector<JailDevice> StandardJailDevices(bool tun, bool kvm);

struct JailLayout {
  // Absolute directory holding all jails (e.g. /srv/metald/jail); created 0700 if missing and
  // never removed.
  std::string base;
  // One path component: [A-Za-z0-9._-]+, not "." or "..".
  std::string vm_id;
  // The VM's identity (non-zero): owner of vm_dirs and of devices with owned_by_vm.
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<JailFile> files;
  std::vector<JailDir> dirs;
  std::vector<JailDevice> devices;
  // Absolute in-jail directories the VMM writes to (API socket, logs), created 0700 for the VM.
  std::vector<std::string> vm_dirs;
};

struct PreparedJail {
  std::string dir;   // <base>/<vm_id>
  std::string root;  // <base>/<vm_id>/root: JailSpec::root.
  // What was done, in order ("mkdir ...", "link ... -> ...", "mount --bind ... (ro)"), for logs.
  std::vector<std::string> steps;

  // The outside path of the in-jail absolute path `inside` (root + inside).
  std::string Outside(std::string_view inside) const { return root + std::string(inside); }
};

// Every filesystem effect of PrepareJail / RemoveJail goes through this interface so that tests
// can make any one of them fail (leveldb's Env). Each call returns 0 or an errno value.
// Thread-safety: implementations must be safe to call concurrently.
class JailOps {
 public:
  virtual ~JailOps() = default;
  virtual int Mkdir(const std::string& path, mode_t mode) = 0;
  virtual int Chmod(const std::string& path, mode_t mode) = 0;
  virtual int Chown(const std::string& path, uid_t uid, gid_t gid) = 0;
  virtual int Link(const std::string& source, const std::string& target) = 0;
  // Creates an empty regular file (O_EXCL): the mount point of a file bind mount.
  virtual int CreateFile(const std::string& path) = 0;
  virtual int BindMount(const std::string& source, const std::string& target) = 0;
  // Remounts the bind mount at `target` read-only (and nosuid, nodev).
  virtual int RemountReadOnly(const std::string& target) = 0;
  virtual int Mknod(const std::string& path, mode_t mode, dev_t dev) = 0;
  // Undo / removal steps.
  virtual int Unmount(const std::string& target) = 0;  // Lazy (MNT_DETACH).
  virtual int Unlink(const std::string& path) = 0;
  virtual int Rmdir(const std::string& path) = 0;
};

// The real syscalls. Never null; lives forever.
JailOps* SystemJailOps();

// Builds the jail described by `layout` (see top). Errors: invalid_argument for a bad layout
// (relative path, unsafe vm_id, uid 0, a source that is not a regular file or device that is not a
// character device), already_exists when <base>/<vm_id> exists (RemoveJail it first), else the
// failing step's errno mapped to a code; the message names the step, path and errno. On error
// nothing this call created remains.
base::Result<PreparedJail> PrepareJail(const JailLayout& layout, JailOps* ops = SystemJailOps());

// Removes <base>/<vm_id> and everything mounted below it. OK when it does not exist (idempotent).
// REQUIRES: no process still uses the jail (kill the VMM first; its open files would keep a lazily
// detached mount alive, though the tree is still removed). Errors name the step, path and errno.
base::Status RemoveJail(std::string_view base, std::string_view vm_id,
                        JailOps* ops = SystemJailOps());

// Mount points at or below `dir` (absolute), from /proc/self/mountinfo, deepest first.
std::vector<std::string> MountsUnder(std::string_view dir);

// Hands out one uid per VM from a configured inclusive range, never giving a uid in use to a
// second VM. The gid is the same number (JailSpec::gid = uid). After a release the uid is the last
// to be handed out again (round robin), so a leftover process of a deleted VM is unlikely to share
// an id with a new VM. The allocator is in memory: after a restart the service re-registers the
// uids of the VMs it adopts with Reserve before allocating new ones.
// Thread-safety: all methods are safe to call concurrently.
class UidAllocator {
 public:
  // REQUIRES: 0 < first <= last.
  UidAllocator(uid_t first, uid_t last);

  // The VM's uid: the one it already holds, else a free one. resource_exhausted when the range is
  // used up.
  base::Result<uid_t> Allocate(std::string_view vm_id);
  // Marks `uid` as held by `vm_id` (re-adoption after a restart). invalid_argument outside the
  // range; already_exists when another VM holds it or this VM holds a different one.
  base::Status Reserve(std::string_view vm_id, uid_t uid);
  // Frees the VM's uid; no-op when it holds none.
  void Release(std::string_view vm_id);
  // The VM's uid, if it holds one.
  std::optional<uid_t> Find(std::string_view vm_id) const;
  // Number of uids currently held.
  size_t InUse() const;

 private:
  // Constant after construction.
  const uid_t first_;
  const uid_t last_;

  mutable std::mutex mu_;
  // Guarded by mu_. Invariant: by_vm_ and used_ hold the same uids.
  std::map<std::string, uid_t, std::less<>> by_vm_;
  std::set<uid_t> used_;
  uid_t next_;  // Where the next search starts.
};

}  // namespace metald::process

#pragma once
// Per-VM cgroups: one group per VM under a per-customer group under metald's own root group, with
// memory, CPU and pids limits (and optional I/O throttles) written before the VMM's first
// instruction. The jailer writes the child's pid into VmCgroup::procs_files between fork and exec.
//
// Layout, the same in every hierarchy used:
//   <mount>/<parent>/<root_name>/<customer_id>/<vm_id>
// The customer level exists so a customer's total can be capped (SetCustomerLimits); it is made by
// the first Create for that customer and removed with its last VM.
//
// Versions. Each controller is placed on its own: cgroup v2 when the v2 root lists it in
// cgroup.controllers, else the cgroup v1 hierarchy it is mounted on (found in /proc/self/mounts).
// A host can therefore be v2, v1, or hybrid (some controllers each way); Mode() says which. memory,
// cpu and pids are required (Open fails with unavailable naming the missing one); io (v2) / blkio
// (v1) is optional, and so is v1 cpuacct (only read for Usage). Limit files per version:
//   memory  v2 memory.max, memory.swap.max=0, memory.oom.group=1
//           v1 memory.limit_in_bytes, memory.memsw.limit_in_bytes (= the same, when present)
//   cpu     v2 cpu.max "<quota> <period>"   v1 cpu.cfs_period_us, cpu.cfs_quota_us
//   pids    pids.max (both)
//   io      v2 io.max "MAJ:MIN rbps=.. wbps=.. riops=.. wiops=.."
//           v1 blkio.throttle.{read,write}_{bps,iops}_device "MAJ:MIN value"
// On v1 a child's CPU quota may not exceed its parent's, so a VM's CPU max is clamped to its
// customer's cap there (v2 applies the smaller of the two by itself).
//
// Names. Customer and VM ids (and root_name) must match [A-Za-z0-9_-]{1,64} and not be a v1
// control file name ("tasks", ...), so no id can escape the root or collide with a control file.
//
// Every file-system effect goes through CgroupFs, so tests can fail any single step on purpose.
//
// Thread-safety: CgroupManager is safe to call from any thread. Create, SetCustomerLimits and the
// customer-group part of Remove serialise on one mutex, so a Create never races the removal of
// its customer's (momentarily empty) group. Calls for one VM must not overlap (the VM's actor
// orders them).

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "metald/base/status.h"

namespace metald::process {

// The file-system operations cgroup management needs. Errors map errno to a code: ENOENT
// not_found, EEXIST already_exists, EBUSY unavailable, ENOTEMPTY failed_precondition, EACCES/EPERM
// permission_denied, EINVAL/ENODEV/ERANGE invalid_argument, anything else internal; messages name
// the operation, path and errno. Implementations must be thread-safe.
class CgroupFs {
 public:
  virtual ~CgroupFs() = default;
  virtual base::Status MakeDir(const std::string& path) = 0;
  virtual base::Status RemoveDir(const std::string& path) = 0;
  // Writes `value` to an existing file in one write(2) (cgroup files take one value per write).
  virtual base::Status WriteFile(const std::string& path, std::string_view value) = 0;
  virtual base::Result<std::string> ReadFile(const std::string& path) = 0;
  virtual bool Exists(const std::string& path) = 0;
  // Names of the directories directly inside `path`, sorted.
  virtual base::Result<std::vector<std::string>> ListDirs(const std::string& path) = 0;

  // The real file system. Never null; lives for the whole program.
  static CgroupFs* Default();
};

enum class CgroupVersion { kNone, kV1, kV2 };

struct CustomerLimits {
  uint64_t memory_bytes = 0;
  double cpus = 0;  // host CPUs, e.g. 2.5
};

struct CgroupOptions {
  // Name of metald's own group at the top of each hierarchy. Tests use a unique one so they never
  // touch a running metald's groups. Default: "metald".
  std::string root_name = "metald";
  // Path of the group root_name is created in, relative to each hierarchy's mount ("" = the
  // mount itself; e.g. "system.slice/metald.service" for a systemd-delegated v2 subtree). No "."
  // or ".." components. Default: "".
  std::string parent;
  // CPU max of a VM = vcpus * cpu_ratio CPUs (1.0: each vCPU may use one host CPU fully; 0.5:
  // half). Must be > 0. Default: 1.0.
  double cpu_ratio = 1.0;
  // CFS period in microseconds, 1000..1000000. Default: 100000 (100 ms).
  uint64_t cpu_period_us = 100000;
  // pids.max of a VM when CgroupLimits::pids_max is 0. Default: 1024.
  int64_t default_pids_max = 1024;
  // Where mounts are read from (the cgroup2 mount is the v2 root; "cgroup" mounts give v1
  // controllers). Default: "/proc/self/mounts".
  std::string mounts_file = "/proc/self/mounts";
  // Caps of every customer group for which SetCustomerLimits was never called (0 = no cap).
  // Default: none.
  CustomerLimits default_customer_limits;
  // Not owned; must outlive the manager. null = CgroupFs::Default(). Tests inject faults here.
  CgroupFs* fs = nullptr;
};

// A block-device throttle. Zero fields mean "no limit" for that direction/kind.
struct CgroupIoLimit {
  uint32_t major = 0;
  uint32_t minor = 0;
  uint64_t read_bps = 0;
  uint64_t write_bps = 0;
  uint64_t read_iops = 0;
  uint64_t write_iops = 0;
};

// Limits of one VM's group. Plain value.
struct CgroupLimits {
  // Cap on all memory the VMM process uses (guest RAM + VMM overhead: the caller adds the
  // overhead). Must be > 0. Swap is not allowed.
  uint64_t memory_bytes = 0;
  // vCPU count; CPU max = vcpus * CgroupOptions::cpu_ratio. Must be > 0.
  uint32_t vcpus = 0;
  // pids.max: 0 = CgroupOptions::default_pids_max, -1 = unlimited, else the value.
  int64_t pids_max = 0;
  // Optional I/O throttles; needs the io (v2) or blkio (v1) controller (else failed_precondition).
  std::vector<CgroupIoLimit> io;
};

// Caps on a customer's total across its VMs. 0 = no cap.
// One VM's group, as made by Create or found by Lookup. Plain value; safe to store.
struct VmCgroup {
  std::string customer_id;
  std::string vm_id;
  // The VM's group directory in each hierarchy used (one for pure v2, one per v1 mount).
  std::vector<std::string> dirs;
  // "<dir>/cgroup.procs" for each dir: a child writes its pid (decimal) into each of these before
  // exec to enter the group in every hierarchy.
  std::vector<std::string> procs_files;
};

// Usage of one VM's group. Fields that the host cannot provide stay 0 and their *_known is false.
struct CgroupUsage {
  uint64_t memory_bytes = 0;       // memory.current / memory.usage_in_bytes
  uint64_t memory_peak_bytes = 0;  // memory.peak / memory.max_usage_in_bytes (0 if absent)
  uint64_t oom_kills = 0;          // memory.events / memory.oom_control "oom_kill"
  uint64_t cpu_usage_ns = 0;       // cpu.stat usage_usec * 1000 / cpuacct.usage
  bool cpu_known = false;
  int64_t pids_current = 0;  // pids.current
};

class CgroupManager {
 public:
  // Detects where each controller lives, validates `options`, and makes the root group
  // (<parent>/<root_name>) in each hierarchy, enabling the v2 controllers down to it through
  // cgroup.subtree_control. Errors: invalid_argument for bad options, unavailable when memory,
  // cpu or pids is in no hierarchy, else the failing file-system step.
  static base::Result<std::unique_ptr<CgroupManager>> Open(CgroupOptions options);

  // Makes the VM's group (and its customer's group if missing, applying any stored customer caps)
  // and writes `limits`. On any error nothing this call made is left behind (the customer group
  // stays only if it existed before or holds other VMs). Errors: invalid_argument for bad ids or
  // limits, already_exists when the VM's group exists, failed_precondition for io limits without
  // an io controller, else the failing write.
  base::Result<VmCgroup> Create(const std::string& customer_id, const std::string& vm_id,
                                const CgroupLimits& limits);

  // The VM's group if it exists in every hierarchy (for re-adopting a VM after a restart);
  // not_found otherwise.
  base::Result<VmCgroup> Lookup(const std::string& customer_id, const std::string& vm_id);

  // Removes the VM's group, then its customer's group once no VM remains. Kills nothing.
  // REQUIRES: the VM's processes are gone (failed_precondition naming the pids otherwise, and
  // nothing is removed). A group the kernel still holds for a moment (EBUSY) is retried for up to
  // about a second. Idempotent: a VM without a group is OK.
  base::Status Remove(const std::string& customer_id, const std::string& vm_id);

  // Stores `limits` for the customer and writes them to its group if it exists (a group made
  // later gets them too). On v1, lowering the CPU cap below a running VM's quota fails with
  // invalid_argument from the kernel.
  base::Status SetCustomerLimits(const std::string& customer_id, const CustomerLimits& limits);

  // Memory, CPU and pids usage of the VM's group; not_found when it does not exist.
  base::Result<CgroupUsage> Usage(const VmCgroup& vm);

  // Every customer and VM group under the root in every hierarchy, as absolute paths, sorted.
  // Empty when no VM has a group. Used by tests and by startup recovery to find strays.
  base::Result<std::vector<std::string>> ListLeftovers();

  // Removes empty customer groups and the root group in every hierarchy (uninstall, and tests
  // leaving the host as it was). failed_precondition when a VM group remains.
  base::Status RemoveRoot();

  // Which version serves `controller` ("memory", "cpu", "pids", "io", "cpuacct"); kNone if none.
  CgroupVersion version(std::string_view controller) const;
  // One line for logs, e.g. "memory=v1(/sys/fs/cgroup/memory) cpu=v1(...) pids=v1(...) io=v1(...)".
  std::string Mode() const;
  // "<mount>/<parent>/<root_name>" in every hierarchy used.
  std::vector<std::string> RootDirs() const;

 private:
  // One cgroup hierarchy and the controllers this manager uses in it.
  struct Hierarchy {
    std::string mount;
    bool v2 = false;
    std::vector<std::string> controllers;  // "memory", "cpu", "pids", "io", "blkio", "cpuacct"
    std::string root;                      // mount/parent/root_name
  };

  CgroupManager(CgroupOptions options, std::vector<Hierarchy> hierarchies);

  const Hierarchy* HierarchyFor(std::string_view controller) const;
  base::Status ApplyCustomerLimits(const std::string& customer_id, const CustomerLimits& limits);
  // The caps of `customer_id`: set by SetCustomerLimits, else options_.default_customer_limits.
  // REQUIRES: mu_ held.
  CustomerLimits CustomerLimitsFor(const std::string& customer_id) const;
  base::Status WriteLimits(const std::string& customer_id, const VmCgroup& vm,
                           const CgroupLimits& limits);
  // Removes each VM dir (retrying EBUSY); not_found counts as removed.
  base::Status RemoveVmDirs(const VmCgroup& vm);
  // Removes the customer's dirs that are empty. REQUIRES: mu_ held.
  void RemoveCustomerDirsIfEmpty(const std::string& customer_id);
  VmCgroup MakeVmCgroup(const std::string& customer_id, const std::string& vm_id) const;

  // Constant after construction.
  const CgroupOptions options_;
  CgroupFs* const fs_;
  const std::vector<Hierarchy> hierarchies_;

  std::mutex mu_;
  // Guarded by mu_.
  std::map<std::string, CustomerLimits> customer_limits_;
};

}  // namespace metald::process

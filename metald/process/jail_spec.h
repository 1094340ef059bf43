#pragma once
// JailSpec: how SystemSpawner confines a VMM process between fork and exec (SpawnSpec::jail). The
// directory tree the process is confined to is built beforehand by jail.h (PrepareJail); this
// header holds only the plain values the child needs, so process.h can include it.
//
// Order of the child's steps (each one reported as "<step>: <strerror> (errno N)" on failure):
//   setsid, reset signals, setns net (SpawnSpec::netns_path), cgroup write (each
//   cgroup_procs_files entry), setrlimit (each rlimits entry), dup2 stdio, close_range,
//   chroot root, chdir cwd, capability bounding set drop, setgroups, setgid, setuid, capset
//   (effective/permitted/inheritable = 0, ambient cleared), no_new_privs, execve.
// The process is in its cgroups and network namespace before the VMM runs its first instruction;
// it holds no capability and cannot regain one (no_new_privs, empty bounding set), and as a
// non-root uid without CAP_SYS_CHROOT it cannot leave the chroot.
//
// Thread-safety: plain values.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace metald::process {

// Every step that can fail while building a jail or while jailing a child; used in error messages
// and by tests to inject a failure at exactly one step.
enum class JailStep : int {
  kNone = 0,
  // Child side (spawner.cc).
  kSetns,
  kCgroupWrite,
  kSetrlimit,
  kChroot,
  kChdir,
  kCapBound,
  kSetgroups,
  kSetgid,
  kSetuid,
  kCapset,
  kNoNewPrivs,
  kExec,
};

// "setns net", "cgroup write", "setrlimit", "chroot", "chdir", "capability bounding set drop",
// "setgroups", "setgid", "setuid", "capset", "no_new_privs", "execve"; "none" for kNone.
std::string_view JailStepName(JailStep step);

// All child steps in the order the child runs them (kNone excluded). For tests that fail each one.
std::vector<JailStep> AllChildJailSteps();

// One resource limit applied with setrlimit in the child.
struct JailRlimit {
  int resource = 0;   // RLIMIT_NOFILE, RLIMIT_FSIZE, ...
  uint64_t soft = 0;  // RLIM_INFINITY for none.
  uint64_t hard = 0;
};

// Test-only: make the child fail at `step` with `err` instead of running it (the step is not
// performed; the child reports exactly as if the syscall had returned -1 with errno = err).
struct JailFault {
  JailStep step = JailStep::kNone;
  int err = 0;
};

struct JailSpec {
  // The chroot: absolute outside path of the directory that becomes "/" (PreparedJail::root).
  // argv[0] and SpawnSpec::cwd are paths inside it; SpawnSpec::output_file stays an outside path.
  std::string root;
  // The identity the VMM runs as. Both must be non-zero (a jailed VMM never runs as root).
  uid_t uid = 0;
  gid_t gid = 0;
  // Supplementary groups; default none (setgroups(0, nullptr)).
  std::vector<gid_t> groups;
  // Files the child writes "0" (= itself) into before exec: cgroup.procs (v2) or tasks /
  // cgroup.procs (v1) of the VM's cgroups. Outside paths; opened before chroot.
  std::vector<std::string> cgroup_procs_files;
  // Applied in order. Default none. Note RLIMIT_FSIZE also bounds the VMM's writable disks.
  std::vector<JailRlimit> rlimits;
  // True: the child is started in a new PID namespace (clone(CLONE_NEWPID)) and is its init, so
  // it cannot see or signal any host process and everything it forks dies with it. ProcessId
  // still names the host pid.
  bool new_pid_namespace = false;
  // Tests only; see JailFault.
  JailFault fault;
};

}  // namespace metald::process

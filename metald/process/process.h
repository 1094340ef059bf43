#pragma once
// Start here. metald/process: starting, watching, signalling and reaping the child processes that
// run VMMs (style.md layer 2; depends on base only).
//
// Process model. A VMM process must outlive metald: a later metald re-adopts it from the identity
// stored in SQLite. So Spawn forks once and the child calls setsid(): it leads a new session and
// process group (no controlling terminal; a Ctrl-C or SIGHUP aimed at metald's group never reaches
// it), and when metald exits the kernel reparents it to init or the nearest subreaper. While metald
// lives the VMM is its direct child, so metald reaps it and learns its exit status; after a
// restart it is not, and the exit status of an adopted process is unknown (ExitInfo::known).
//
// Identity. A pid alone is not an identity (pids are reused). ProcessId pairs it with the start
// time from /proc/<pid>/stat (field 22, clock ticks since boot), which never changes for a process
// and differs for any later process that reuses the pid. Every call that acts on a process checks
// both; signals go through a pidfd opened before the check, so the check and the kill cannot race
// with a pid reuse.
//
// Errors name the step and errno: "fork: Resource temporarily unavailable (errno 11)".
//
// Jailer: SpawnSpec::jail (jail_spec.h) confines the child between fork and exec (netns, cgroups,
// rlimits, chroot, uid/gid, no capabilities, no_new_privs); the jail directory is built first with
// jail.h. SpawnSpec::netns_path alone runs an unjailed child in a network namespace.
//
// Thread-safety: ProcessSpawner implementations are safe to call from any thread concurrently.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "metald/base/status.h"
#include "metald/process/jail_spec.h"

namespace metald::process {

// A process identity that survives pid reuse. Plain value; stored by the service.
struct ProcessId {
  pid_t pid = 0;
  uint64_t start_time = 0;  // /proc/<pid>/stat field 22 (clock ticks after boot).
  friend bool operator==(const ProcessId&, const ProcessId&) = default;
};

// "pid 1234 (start 56789)", for messages.
std::string ToString(const ProcessId& id);

// What to run. Plain value.
struct SpawnSpec {
  // argv[0] must be an absolute path: there is no PATH search (the environment is clean).
  std::vector<std::string> argv;
  // The complete environment ("KEY=value"); nothing is inherited from metald.
  std::vector<std::string> env;
  // Working directory; empty = "/".
  std::string cwd;
  // stdout and stderr are appended to this file (created 0640 if missing); empty = /dev/null.
  // stdin is always /dev/null.
  std::string output_file;
  // Descriptors of metald passed to the child under the same numbers (e.g. an open TAP device).
  // Every other descriptor above 2 is closed in the child.
  std::vector<int> keep_fds;
  // Non-empty: the child joins this network namespace (e.g. "/run/netns/<name>") before exec.
  std::string netns_path;
  // Set: the child is jailed (jail_spec.h). argv[0] and cwd are then paths inside jail->root.
  std::optional<JailSpec> jail;
};

// How a process ended. `known` is false when the process was not metald's child (adopted after a
// restart): it is gone, but its status went to its new parent.
struct ExitInfo {
  bool known = false;
  int exit_code = -1;  // WEXITSTATUS when it exited, else -1.
  int signal = 0;      // The terminating signal when killed, else 0.

  // True for a known, clean exit (status 0).
  bool clean() const { return known && exit_code == 0 && signal == 0; }
  friend bool operator==(const ExitInfo&, const ExitInfo&) = default;
};

// "exit 0", "signal 9", "exit status unknown".
std::string ToString(const ExitInfo& info);

// Resource usage of a live process, read from /proc.
struct ProcessUsage {
  uint64_t cpu_time_ns = 0;  // utime + stime of the whole process (all threads).
  uint64_t rss_bytes = 0;    // VmRSS.
};

class ProcessSpawner {
 public:
  virtual ~ProcessSpawner() = default;

  // Starts `spec` in a new session (see top). Returns once the child has exec'd; an exec failure
  // (missing binary, bad cwd, unopenable output file) is reported as an error naming the step,
  // and the failed child is reaped. A jailed spawn that fails names the jail step and errno
  // ("Spawn: setuid: Operation not permitted (errno 1)"). Errors: invalid_argument for an empty or
  // relative argv[0] or a bad jail (uid/gid 0, relative root), not_found for a missing
  // executable or netns, internal/unavailable for fork/pipe failures.
  virtual base::Result<ProcessId> Spawn(const SpawnSpec& spec) = 0;

  // True while the process `id` names exists and is not a zombie. A zombie child of ours is
  // reaped here (its ExitInfo is kept for WaitForExit). False for a reused pid.
  virtual bool IsAlive(const ProcessId& id) = 0;

  // Sends `sig` to `id`. not_found when that process no longer exists (or the pid was reused).
  virtual base::Status Signal(const ProcessId& id, int sig) = 0;

  // Blocks until `id` has exited or `timeout` passes. Returns how it ended (reaping it when it is
  // our child); deadline_exceeded on timeout. A process that is already gone returns at once.
  virtual base::Result<ExitInfo> WaitForExit(const ProcessId& id,
                                             std::chrono::milliseconds timeout) = 0;

  // SIGKILL, then WaitForExit(timeout). A process already gone is not an error.
  virtual base::Result<ExitInfo> Kill(const ProcessId& id, std::chrono::milliseconds timeout) = 0;

  // CPU time and RSS of the live process `id`; not_found when it is gone.
  virtual base::Result<ProcessUsage> Usage(const ProcessId& id) = 0;

  // The identity of a live pid (reads its start time); not_found when it does not exist. Used to
  // re-adopt a stored pid and to verify it still names the same process.
  virtual base::Result<ProcessId> Identify(pid_t pid) = 0;
};

// The real implementation (fork/setsid/execve, /proc, pidfd). Stateless apart from the exit
// statuses of children it reaped and nobody has collected yet.
std::unique_ptr<ProcessSpawner> NewSystemSpawner();

}  // namespace metald::process

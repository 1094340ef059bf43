// The system ProcessSpawner: fork + setsid + execve, /proc for identity and usage, pidfd for
// waiting and race-free signalling.

#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "metald/process/proc_stat.h"
#include "metald/process/process.h"

namespace metald::process {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// glibc 2.36's <sys/pidfd.h> lacks C linkage declarations for C++; call the syscalls directly.
int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int PidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

std::string ErrnoText(int err) {
  return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")";
}

base::Status ErrnoStatus(const std::string& step, int err) {
  std::string msg = step + ": " + ErrnoText(err);
  switch (err) {
    case ENOENT:
      return base::NotFoundError(std::move(msg));
    case EACCES:
    case EPERM:
      return base::PermissionDeniedError(std::move(msg));
    case EAGAIN:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      return base::ResourceExhaustedError(std::move(msg));
    default:
      return base::InternalError(std::move(msg));
  }
}

// Steps the child can fail at, reported through the exec-error pipe. Jail steps are reported as
// kJailBase + JailStep.
enum ChildStep : int { kSetsid = 1, kDupStdio, kCloseFds, kKeepFd, kChdir, kExec };
constexpr int kJailBase = 100;

const char* RlimitName(int resource) {
  switch (resource) {
    case RLIMIT_NOFILE:
      return "RLIMIT_NOFILE";
    case RLIMIT_FSIZE:
      return "RLIMIT_FSIZE";
    case RLIMIT_NPROC:
      return "RLIMIT_NPROC";
    case RLIMIT_CORE:
      return "RLIMIT_CORE";
    case RLIMIT_MEMLOCK:
      return "RLIMIT_MEMLOCK";
    case RLIMIT_AS:
      return "RLIMIT_AS";
    default:
      return "resource";
  }
}

std::string ChildStepName(int step) {
  switch (step) {
    case kSetsid:
      return "setsid";
    case kDupStdio:
      return "dup2 stdio";
    case kCloseFds:
      return "close_range";
    case kKeepFd:
      return "fcntl keep_fds";
    case kChdir:
      return "chdir";
    case kExec:
      return "execve";
    default:
      if (step > kJailBase)
        return std::string(JailStepName(static_cast<JailStep>(step - kJailBase)));
      return "child setup";
  }
}

struct ChildError {
  int step;
  int err;
  int index;  // Which cgroup file / rlimit failed; 0 otherwise.
};

// Everything the child needs, prepared before fork: after it only async-signal-safe calls and no
// allocation (vectors are read, never grown).
struct ChildPlan {
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* cwd = nullptr;
  int in_fd = -1;
  int out_fd = -1;
  int err_fd = -1;
  const std::vector<int>* keep = nullptr;  // Sorted, distinct, all > 2, includes err_fd.
  int netns_fd = -1;                       // -1: stay in metald's network namespace.
  const JailSpec* jail = nullptr;          // Null: not jailed.
  const std::vector<const char*>* cgroup_files = nullptr;
};

// In the child after fork: only async-signal-safe calls. Reports the failing step and errno
// through `err_fd` (close-on-exec, so a successful exec closes it and the parent reads EOF).
[[noreturn]] void ChildFail(int err_fd, int step, int index = 0) {
  ChildError e{step, errno, index};
  ssize_t unused = ::write(err_fd, &e, sizeof e);
  (void)unused;
  ::_exit(127);
}

// Test-only fault injection: fails `step` as if its syscall had returned -1.
void MaybeInject(const ChildPlan& p, JailStep step) {
  if (p.jail != nullptr && p.jail->fault.step == step) {
    errno = p.jail->fault.err;
    ChildFail(p.err_fd, kJailBase + static_cast<int>(step));
  }
}

[[noreturn]] void JailFail(const ChildPlan& p, JailStep step, int index = 0) {
  ChildFail(p.err_fd, kJailBase + static_cast<int>(step), index);
}

// The capability drop of a jailed child: setgroups/setgid/setuid go through raw syscalls because
// glibc's wrappers broadcast to every thread it believes exists, and after a raw clone() it still
// believes in the parent's threads. The child is single-threaded, so per-thread is per-process.
void DropPrivileges(const ChildPlan& p) {
  const JailSpec& j = *p.jail;
  MaybeInject(p, JailStep::kCapBound);
  // Needs CAP_SETPCAP, so before setuid. EINVAL marks the end of the kernel's capability list.
  for (int cap = 0; cap < 64; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
      if (errno == EINVAL) break;
      JailFail(p, JailStep::kCapBound, cap);
    }
  }
  MaybeInject(p, JailStep::kSetgroups);
  if (::syscall(SYS_setgroups, j.groups.size(), j.groups.empty() ? nullptr : j.groups.data()) < 0) {
    JailFail(p, JailStep::kSetgroups);
  }
  MaybeInject(p, JailStep::kSetgid);
  if (::syscall(SYS_setresgid, j.gid, j.gid, j.gid) < 0) JailFail(p, JailStep::kSetgid);
  MaybeInject(p, JailStep::kSetuid);
  if (::syscall(SYS_setresuid, j.uid, j.uid, j.uid) < 0) JailFail(p, JailStep::kSetuid);
  // setuid away from 0 cleared the permitted, effective and ambient sets; the inheritable set
  // survives it. Clear everything explicitly so the result does not depend on securebits.
  MaybeInject(p, JailStep::kCapset);
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) {
    JailFail(p, JailStep::kCapset);
  }
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2];
  std::memset(data, 0, sizeof data);
  if (::syscall(SYS_capset, &header, data) < 0) JailFail(p, JailStep::kCapset);
  MaybeInject(p, JailStep::kNoNewPrivs);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) JailFail(p, JailStep::kNoNewPrivs);
}

[[noreturn]] void RunChild(const ChildPlan& p) {
  int err_fd = p.err_fd;
  if (::setsid() < 0) ChildFail(err_fd, kSetsid);
  // Signal dispositions set to handlers are reset by execve, but ignored ones and the mask are
  // inherited: start the VMM with the defaults.
  sigset_t empty;
  sigemptyset(&empty);
  ::sigprocmask(SIG_SETMASK, &empty, nullptr);
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);  // Fails for KILL/STOP.

  if (p.netns_fd >= 0) {
    MaybeInject(p, JailStep::kSetns);
    if (::setns(p.netns_fd, CLONE_NEWNET) < 0) JailFail(p, JailStep::kSetns);
  }
  if (p.jail != nullptr) {
    // Into the VM's cgroups before anything of the VMM runs; "0" names the writer itself (also
    // right inside a new PID namespace, where getpid() would say 1).
    MaybeInject(p, JailStep::kCgroupWrite);
    for (size_t i = 0; i < p.cgroup_files->size(); ++i) {
      int fd = ::open((*p.cgroup_files)[i], O_WRONLY | O_CLOEXEC);
      if (fd < 0) JailFail(p, JailStep::kCgroupWrite, static_cast<int>(i));
      if (::write(fd, "0", 1) != 1) JailFail(p, JailStep::kCgroupWrite, static_cast<int>(i));
      ::close(fd);
    }
    MaybeInject(p, JailStep::kSetrlimit);
    for (size_t i = 0; i < p.jail->rlimits.size(); ++i) {
      const JailRlimit& r = p.jail->rlimits[i];
      struct rlimit lim {
        static_cast<rlim_t>(r.soft), static_cast<rlim_t>(r.hard)
      };
      if (::setrlimit(static_cast<__rlimit_resource>(r.resource), &lim) < 0) {
        JailFail(p, JailStep::kSetrlimit, static_cast<int>(i));
      }
    }
  }

  if (::dup2(p.in_fd, 0) < 0 || ::dup2(p.out_fd, 1) < 0 || ::dup2(p.out_fd, 2) < 0) {
    ChildFail(err_fd, kDupStdio);
  }
  // dup2 onto the same number keeps close-on-exec; clear it on the three stdio descriptors.
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_SETFD, 0) < 0) ChildFail(err_fd, kDupStdio);
  }
  // Close every descriptor above 2 except `keep` (which includes err_fd).
  unsigned int next = 3;
  for (int fd : *p.keep) {
    if (static_cast<unsigned int>(fd) > next &&
        ::close_range(next, static_cast<unsigned int>(fd) - 1, 0) < 0) {
      ChildFail(err_fd, kCloseFds);
    }
    next = static_cast<unsigned int>(fd) + 1;
  }
  if (::close_range(next, ~0U, 0) < 0) ChildFail(err_fd, kCloseFds);
  for (int fd : *p.keep) {
    if (fd == err_fd) continue;
    int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0 || ::fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) < 0) ChildFail(err_fd, kKeepFd);
  }
  if (p.jail != nullptr) {
    MaybeInject(p, JailStep::kChroot);
    if (::chroot(p.jail->root.c_str()) < 0) JailFail(p, JailStep::kChroot);
    MaybeInject(p, JailStep::kChdir);
  }
  if (::chdir(p.cwd) < 0) ChildFail(err_fd, kChdir);
  if (p.jail != nullptr) {
    DropPrivileges(p);
    MaybeInject(p, JailStep::kExec);
  }
  ::execve(p.path, p.argv, p.envp);
  ChildFail(err_fd, kExec);
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

ExitInfo FromSiginfo(const siginfo_t& info) {
  ExitInfo e;
  e.known = true;
  if (info.si_code == CLD_EXITED) {
    e.exit_code = info.si_status;
  } else {
    e.signal = info.si_status;
  }
  return e;
}

base::Status ValidateJail(const JailSpec& jail) {
  if (jail.root.empty() || jail.root[0] != '/') {
    return base::InvalidArgumentError("Spawn: jail root must be an absolute path");
  }
  if (jail.uid == 0 || jail.gid == 0) {
    return base::InvalidArgumentError("Spawn: a jailed process must not run as uid or gid 0");
  }
  struct stat st;
  if (::stat(jail.root.c_str(), &st) < 0) return ErrnoStatus("Spawn: stat " + jail.root, errno);
  if (!S_ISDIR(st.st_mode)) {
    return base::InvalidArgumentError("Spawn: jail root " + jail.root + " is not a directory");
  }
  return base::OkStatus();
}

class SystemSpawner final : public ProcessSpawner {
 public:
  base::Result<ProcessId> Spawn(const SpawnSpec& spec) override {
    if (spec.argv.empty() || spec.argv[0].empty() || spec.argv[0][0] != '/') {
      return base::InvalidArgumentError("Spawn: argv[0] must be an absolute path");
    }
    if (spec.jail) RETURN_IF_ERROR(ValidateJail(*spec.jail));
    // A precheck for a clear error; the jailed child resolves argv[0] inside its root.
    std::string exe = spec.jail ? spec.jail->root + spec.argv[0] : spec.argv[0];
    if (::access(exe.c_str(), X_OK) < 0) return ErrnoStatus("Spawn: access " + exe, errno);
    std::vector<int> keep = spec.keep_fds;
    std::sort(keep.begin(), keep.end());
    keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
    for (int fd : keep) {
      if (fd <= 2 || ::fcntl(fd, F_GETFD) < 0) {
        return base::InvalidArgumentError("Spawn: keep_fds holds " + std::to_string(fd) +
                                          ", which is not an open descriptor above 2");
      }
    }

    // Everything the child needs is prepared before fork: after it only async-signal-safe calls.
    std::vector<char*> argv;
    for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (const std::string& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    std::string cwd = spec.cwd.empty() ? "/" : spec.cwd;

    Fd in_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (in_fd.get() < 0) return ErrnoStatus("Spawn: open /dev/null", errno);
    std::string out_path = spec.output_file.empty() ? "/dev/null" : spec.output_file;
    Fd out_fd(::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
    if (out_fd.get() < 0) return ErrnoStatus("Spawn: open " + out_path, errno);
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) < 0) return ErrnoStatus("Spawn: pipe2", errno);
    Fd err_read(pipe_fds[0]);
    Fd err_write(pipe_fds[1]);
    // The child keeps err_write open across its close_range; it is close-on-exec.
    std::vector<int> child_keep = keep;
    child_keep.push_back(err_write.get());
    std::sort(child_keep.begin(), child_keep.end());

    Fd netns_fd(spec.netns_path.empty() ? -1
                                        : ::open(spec.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!spec.netns_path.empty() && netns_fd.get() < 0) {
      return ErrnoStatus("Spawn: open netns " + spec.netns_path, errno);
    }
    std::vector<const char*> cgroup_files;
    if (spec.jail) {
      for (const std::string& f : spec.jail->cgroup_procs_files) cgroup_files.push_back(f.c_str());
    }
    ChildPlan plan;
    plan.path = argv[0];
    plan.argv = argv.data();
    plan.envp = envp.data();
    plan.cwd = cwd.c_str();
    plan.in_fd = in_fd.get();
    plan.out_fd = out_fd.get();
    plan.err_fd = err_write.get();
    plan.keep = &child_keep;
    plan.netns_fd = netns_fd.get();
    plan.jail = spec.jail ? &*spec.jail : nullptr;
    plan.cgroup_files = &cgroup_files;

    pid_t pid;
    if (spec.jail && spec.jail->new_pid_namespace) {
      // clone() without CLONE_VM and with a null stack behaves like fork() and makes the child the
      // init of a new PID namespace (unshare(CLONE_NEWPID) would only affect its children).
      pid = static_cast<pid_t>(
          ::syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, nullptr, nullptr, nullptr, nullptr));
    } else {
      pid = ::fork();
    }
    if (pid < 0) return ErrnoStatus("Spawn: fork", errno);
    if (pid == 0) RunChild(plan);
    err_write.Reset();
    ChildError child_error{};
    ssize_t n;
    do {
      n = ::read(err_read.get(), &child_error, sizeof child_error);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      int status;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      std::string step = ChildStepName(child_error.step);
      if (child_error.step == kExec) step += " " + spec.argv[0];
      if (child_error.step == kChdir) step += " " + cwd;
      if (child_error.step == kJailBase + static_cast<int>(JailStep::kSetns)) {
        step += " " + spec.netns_path;
      }
      if (child_error.step == kJailBase + static_cast<int>(JailStep::kChroot)) {
        step += " " + spec.jail->root;
      }
      if (child_error.step == kJailBase + static_cast<int>(JailStep::kCgroupWrite) &&
          static_cast<size_t>(child_error.index) < cgroup_files.size()) {
        step += std::string(" ") + cgroup_files[child_error.index];
      }
      if (child_error.step == kJailBase + static_cast<int>(JailStep::kSetrlimit) &&
          static_cast<size_t>(child_error.index) < spec.jail->rlimits.size()) {
        step += std::string(" ") + RlimitName(spec.jail->rlimits[child_error.index].resource);
      }
      return ErrnoStatus("Spawn: " + step, child_error.err);
    }
    // The child exec'd. It is our child and unreaped, so its pid cannot be reused yet and its
    // /proc entry exists (as a zombie if it already exited).
    base::Result<ProcStat> stat = ReadProcStat(pid);
    if (!stat.ok()) return stat.status().WithContext("Spawn: read start time");
    return ProcessId{pid, stat->start_time};
  }

  bool IsAlive(const ProcessId& id) override {
    base::Result<ProcStat> stat = ReadProcStat(id.pid);
    if (!stat.ok() || stat->start_time != id.start_time) return false;
    if (stat->state == 'Z' || stat->state == 'X') {
      TryReap(id);
      return false;
    }
    return true;
  }

  base::Status Signal(const ProcessId& id, int sig) override {
    // Open the pidfd first, then check the identity: the pidfd pins the process the check saw.
    Fd pidfd(PidfdOpen(id.pid));
    if (pidfd.get() < 0) {
      if (errno == ESRCH) return base::NotFoundError("Process " + ToString(id) + " is gone");
      return ErrnoStatus("pidfd_open " + ToString(id), errno);
    }
    if (!IsAlive(id)) return base::NotFoundError("Process " + ToString(id) + " is gone");
    if (PidfdSendSignal(pidfd.get(), sig) < 0) {
      if (errno == ESRCH) return base::NotFoundError("Process " + ToString(id) + " is gone");
      return ErrnoStatus("pidfd_send_signal " + ToString(id), errno);
    }
    return base::OkStatus();
  }

  base::Result<ExitInfo> WaitForExit(const ProcessId& id, milliseconds timeout) override {
    if (std::optional<ExitInfo> reaped = TakeReaped(id)) return *reaped;
    Fd pidfd(PidfdOpen(id.pid));
    if (pidfd.get() < 0) {
      if (errno != ESRCH) return ErrnoStatus("pidfd_open " + ToString(id), errno);
      return Gone(id);
    }
    base::Result<ProcStat> stat = ReadProcStat(id.pid);
    if (!stat.ok() || stat->start_time != id.start_time) return Gone(id);
    Clock::time_point deadline = Clock::now() + timeout;
    for (;;) {
      milliseconds left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() < 0) left = milliseconds(0);
      pollfd p{pidfd.get(), POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 60'000)));
      if (r < 0 && errno != EINTR) return ErrnoStatus("poll pidfd " + ToString(id), errno);
      if (r > 0) break;
      if (Clock::now() >= deadline) {
        return base::DeadlineExceededError("Process " + ToString(id) + " did not exit within " +
                                           std::to_string(timeout.count()) + " ms");
      }
    }
    TryReap(id);
    return Gone(id);
  }

  base::Result<ExitInfo> Kill(const ProcessId& id, milliseconds timeout) override {
    base::Status st = Signal(id, SIGKILL);
    if (!st.ok() && st.code() != base::StatusCode::kNotFound) return st;
    return WaitForExit(id, timeout);
  }

  base::Result<ProcessUsage> Usage(const ProcessId& id) override {
    base::Result<ProcStat> stat = ReadProcStat(id.pid);
    if (!stat.ok() || stat->start_time != id.start_time || stat->state == 'Z') {
      return base::NotFoundError("Process " + ToString(id) + " is gone");
    }
    ASSIGN_OR_RETURN(uint64_t rss, ReadVmRssBytes(id.pid));
    static const int64_t kTicks = ::sysconf(_SC_CLK_TCK);
    ProcessUsage usage;
    usage.cpu_time_ns =
        (stat->utime + stat->stime) * (1'000'000'000ull / static_cast<uint64_t>(kTicks));
    usage.rss_bytes = rss;
    return usage;
  }

  base::Result<ProcessId> Identify(pid_t pid) override {
    base::Result<ProcStat> stat = ReadProcStat(pid);
    if (!stat.ok()) return stat.status();
    if (stat->state == 'Z' || stat->state == 'X') {
      return base::NotFoundError("Process " + std::to_string(pid) + " has exited");
    }
    return ProcessId{pid, stat->start_time};
  }

 private:
  // The process is gone: its status if we reaped it, else "unknown".
  ExitInfo Gone(const ProcessId& id) {
    if (std::optional<ExitInfo> reaped = TakeReaped(id)) return *reaped;
    return ExitInfo{};
  }

  std::optional<ExitInfo> TakeReaped(const ProcessId& id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = reaped_.find(std::make_pair(id.pid, id.start_time));
    if (it == reaped_.end()) return std::nullopt;
    return it->second;  // Kept: several callers may ask (e.g. Info after Shutdown).
  }

  // Reaps `id` if it is our exited child. All reaping happens under mutex_ after an identity check,
  // so a reused pid (possible only once the old child is reaped) is never reaped by mistake.
  void TryReap(const ProcessId& id) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (reaped_.count(std::make_pair(id.pid, id.start_time))) return;
    base::Result<ProcStat> stat = ReadProcStat(id.pid);
    if (!stat.ok() || stat->start_time != id.start_time) return;
    siginfo_t info;
    std::memset(&info, 0, sizeof info);
    if (::waitid(P_PID, static_cast<id_t>(id.pid), &info, WEXITED | WNOHANG) == 0 &&
        info.si_pid == id.pid) {
      if (reaped_.size() >= kMaxReaped) reaped_.erase(reaped_.begin());
      reaped_[std::make_pair(id.pid, id.start_time)] = FromSiginfo(info);
    }
  }

  static constexpr size_t kMaxReaped = 4096;
  std::mutex mutex_;
  // Guarded by mutex_: exit statuses of children reaped here, by (pid, start_time).
  std::map<std::pair<pid_t, uint64_t>, ExitInfo> reaped_;
};

}  // namespace

std::string ToString(const ProcessId& id) {
  return "pid " + std::to_string(id.pid) + " (start " + std::to_string(id.start_time) + ")";
}

std::string ToString(const ExitInfo& info) {
  if (!info.known) return "exit status unknown";
  if (info.signal != 0) return "signal " + std::to_string(info.signal);
  return "exit " + std::to_string(info.exit_code);
}

std::unique_ptr<ProcessSpawner> NewSystemSpawner() { return std::make_unique<SystemSpawner>(); }

}  // namespace metald::process

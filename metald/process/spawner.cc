// The system ProcessSpawner: fork + setsid + execve, /proc for identity and usage, pidfd for
// waiting and race-free signalling.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
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

// Steps the child can fail at, reported through the exec-error pipe.
enum ChildStep : int { kSetsid = 1, kDupStdio, kCloseFds, kKeepFd, kChdir, kExec };

const char* ChildStepName(int step) {
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
      return "child setup";
  }
}

struct ChildError {
  int step;
  int err;
};

// In the child after fork: only async-signal-safe calls. Reports the failing step and errno
// through `err_fd` (close-on-exec, so a successful exec closes it and the parent reads EOF).
[[noreturn]] void ChildFail(int err_fd, int step) {
  ChildError e{step, errno};
  ssize_t unused = ::write(err_fd, &e, sizeof e);
  (void)unused;
  ::_exit(127);
}

[[noreturn]] void RunChild(const char* path, char* const* argv, char* const* envp, const char* cwd,
                           int in_fd, int out_fd, int err_fd, const std::vector<int>& keep) {
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

  if (::dup2(in_fd, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(out_fd, 2) < 0) {
    ChildFail(err_fd, kDupStdio);
  }
  // dup2 onto the same number keeps close-on-exec; clear it on the three stdio descriptors.
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_SETFD, 0) < 0) ChildFail(err_fd, kDupStdio);
  }
  // Close every descriptor above 2 except `keep` and err_fd (sorted, distinct, all > 2).
  unsigned int next = 3;
  for (int fd : keep) {
    if (static_cast<unsigned int>(fd) > next &&
        ::close_range(next, static_cast<unsigned int>(fd) - 1, 0) < 0) {
      ChildFail(err_fd, kCloseFds);
    }
    next = static_cast<unsigned int>(fd) + 1;
  }
  if (::close_range(next, ~0U, 0) < 0) ChildFail(err_fd, kCloseFds);
  for (int fd : keep) {
    if (fd == err_fd) continue;
    int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0 || ::fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) < 0) ChildFail(err_fd, kKeepFd);
  }
  if (::chdir(cwd) < 0) ChildFail(err_fd, kChdir);
  ::execve(path, argv, envp);
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

class SystemSpawner final : public ProcessSpawner {
 public:
  base::Result<ProcessId> Spawn(const SpawnSpec& spec) override {
    if (spec.argv.empty() || spec.argv[0].empty() || spec.argv[0][0] != '/') {
      return base::InvalidArgumentError("Spawn: argv[0] must be an absolute path");
    }
    if (::access(spec.argv[0].c_str(), X_OK) < 0) {
      return ErrnoStatus("Spawn: access " + spec.argv[0], errno);
    }
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

    pid_t pid = ::fork();
    if (pid < 0) return ErrnoStatus("Spawn: fork", errno);
    if (pid == 0) {
      RunChild(argv[0], argv.data(), envp.data(), cwd.c_str(), in_fd.get(), out_fd.get(),
               err_write.get(), child_keep);
    }
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

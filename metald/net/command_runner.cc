#include "metald/net/command_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

extern char** environ;

namespace metald::net {
namespace {

std::string ErrnoText(std::string_view what, int err) {
  return std::string(what) + ": " + std::strerror(err) + " (errno " + std::to_string(err) + ")";
}

// Closes both ends of a pipe pair that are still open.
struct PipePair {
  int fds[2] = {-1, -1};
  ~PipePair() {
    for (int& fd : fds) {
      if (fd >= 0) ::close(fd);
    }
  }
  void Close(int i) {
    if (fds[i] >= 0) ::close(fds[i]);
    fds[i] = -1;
  }
};

// write() that cannot kill the process with SIGPIPE when the child closed its stdin early: the
// signal is blocked for this thread during the call and a pending one is consumed.
ssize_t WriteNoSigpipe(int fd, const char* data, size_t size) {
  sigset_t pipe_set, old_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
  ssize_t n = ::write(fd, data, size);
  int saved = errno;
  if (n < 0 && saved == EPIPE) {
    timespec zero{};
    while (sigtimedwait(&pipe_set, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
  errno = saved;
  return n;
}

class SubprocessRunner final : public CommandRunner {
 public:
  base::Result<CommandResult> Run(const Command& command) override {
    if (command.argv.empty()) return base::InvalidArgumentError("Empty command");
    PipePair in, out, err;
    for (PipePair* p : {&in, &out, &err}) {
      if (::pipe2(p->fds, O_CLOEXEC) != 0) return base::InternalError(ErrnoText("pipe2", errno));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in.fds[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out.fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err.fds[1], 2);
    // A caller that ignores SIGPIPE must not pass that on to the tools.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    sigset_t empty_mask;
    sigemptyset(&empty_mask);
    posix_spawnattr_setsigmask(&attr, &empty_mask);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

    std::vector<char*> argv;
    for (const std::string& a : command.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = 0;
    int rc = ::posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) return base::UnavailableError(ErrnoText("spawn " + command.argv[0], rc));
    in.Close(0);
    out.Close(1);
    err.Close(1);

    CommandResult result;
    size_t written = 0;
    if (command.stdin_data.empty()) in.Close(1);
    std::array<char, 4096> buf;
    // Pump stdin and both outputs together so a chatty child never blocks on a full pipe.
    while (out.fds[0] >= 0 || err.fds[0] >= 0 || in.fds[1] >= 0) {
      std::vector<pollfd> pfds;
      if (in.fds[1] >= 0) pfds.push_back({in.fds[1], POLLOUT, 0});
      if (out.fds[0] >= 0) pfds.push_back({out.fds[0], POLLIN, 0});
      if (err.fds[0] >= 0) pfds.push_back({err.fds[0], POLLIN, 0});
      if (::poll(pfds.data(), pfds.size(), -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      for (const pollfd& p : pfds) {
        if (p.revents == 0) continue;
        if (p.fd == in.fds[1]) {
          ssize_t n = WriteNoSigpipe(p.fd, command.stdin_data.data() + written,
                                     command.stdin_data.size() - written);
          if (n > 0) written += static_cast<size_t>(n);
          if (n < 0 && errno != EINTR && errno != EAGAIN) written = command.stdin_data.size();
          if (written == command.stdin_data.size()) in.Close(1);
          continue;
        }
        ssize_t n = ::read(p.fd, buf.data(), buf.size());
        if (n > 0) {
          (p.fd == out.fds[0] ? result.stdout_data : result.stderr_data)
              .append(buf.data(), static_cast<size_t>(n));
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
          (p.fd == out.fds[0] ? out : err).Close(0);
        }
      }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) return base::InternalError(ErrnoText("waitpid", errno));
    }
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return result;
  }
};

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

}  // namespace

std::string Command::ToString() const {
  std::string s;
  for (const std::string& a : argv) {
    if (!s.empty()) s += ' ';
    s += a;
  }
  return s;
}

std::unique_ptr<CommandRunner> NewSubprocessRunner() {
  return std::make_unique<SubprocessRunner>();
}

base::Result<std::string> RunChecked(CommandRunner& runner, const Command& command) {
  ASSIGN_OR_RETURN(CommandResult r, runner.Run(command));
  if (r.exit_code != 0) {
    std::string err = Trim(r.stderr_data);
    if (err.empty()) err = Trim(r.stdout_data);
    return base::InternalError(command.ToString() + " exited with " + std::to_string(r.exit_code) +
                               (err.empty() ? "" : ": " + err));
  }
  return std::move(r.stdout_data);
}

}  // namespace metald::net

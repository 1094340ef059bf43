#pragma once
// Test helpers for integration tests that run the real `metald` (and `metalctl`) binaries:
// start a daemon on 127.0.0.1:0 with --ready-file and wait for it, run a command to completion
// capturing its output, and a minimal HTTP/1.1 GET over loopback. Header-only; tests only.
//
// Thread-safety: none; one test thread uses these.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace metald::daemon::testing {

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A temporary directory removed on destruction.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/metald_it_XXXXXX";
    path_ = ::mkdtemp(tmpl) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Forks and execs `argv` with `env` added to the environment; stdout/stderr go to the files.
inline pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                   const std::string& stdout_path, const std::string& stderr_path) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int out = ::open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out >= 0) ::dup2(out, 1);
    if (err >= 0) ::dup2(err, 2);
    for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

// Waits up to `timeout` for `pid`; its exit code, 128+signal, or nullopt on timeout.
inline std::optional<int> WaitExit(pid_t pid, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    }
    if (r < 0) return std::nullopt;
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

struct CommandResult {
  int exit_code = -1;  // -1 when it did not finish in time (then it was killed).
  std::string out;
  std::string err;
};

// Runs `argv` to completion (killed after `timeout`) and returns its exit code and output.
inline CommandResult RunCommand(const std::vector<std::string>& argv,
                                const std::vector<std::string>& env = {},
                                std::chrono::seconds timeout = std::chrono::seconds(120)) {
  TempDir dir;
  std::string out = dir.path() + "/out", err = dir.path() + "/err";
  pid_t pid = Spawn(argv, env, out, err);
  CommandResult result;
  std::optional<int> code = WaitExit(pid, timeout);
  if (!code) {
    ::kill(pid, SIGKILL);
    WaitExit(pid, std::chrono::seconds(10));
  }
  result.exit_code = code.value_or(-1);
  result.out = ReadWholeFile(out);
  result.err = ReadWholeFile(err);
  return result;
}

struct HttpResult {
  int status = 0;  // 0 when the request failed.
  std::string body;
};

// GET http://<addr><path> ("127.0.0.1:1234"), HTTP/1.1 with Connection: close.
inline HttpResult HttpGet(const std::string& addr, const std::string& path,
                          const std::string& extra_headers = "") {
  HttpResult result;
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return result;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::stoi(addr.substr(colon + 1))));
  if (::inet_pton(AF_INET, addr.substr(0, colon).c_str(), &sa.sin_addr) != 1) return result;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return result;
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return result;
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n" +
                    extra_headers + "\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return result;
  }
  std::string response;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) response.append(buf, static_cast<size_t>(n));
  ::close(fd);
  // "HTTP/1.1 200 OK\r\n...\r\n\r\nbody"; the body is read to EOF (chunked is not decoded).
  if (response.size() < 12 || !response.starts_with("HTTP/1.")) return result;
  result.status = std::atoi(response.substr(9, 3).c_str());
  size_t body = response.find("\r\n\r\n");
  if (body != std::string::npos) result.body = response.substr(body + 4);
  return result;
}

// A metald started with --listen 127.0.0.1:0 --ready-file and a temporary data dir and image
// root. Stopped with SIGTERM (then SIGKILL) on destruction if still running.
class MetaldProcess {
 public:
  // Starts `binary` with the standard test flags plus `extra_flags`.
  MetaldProcess(const std::string& binary, std::vector<std::string> extra_flags = {"--dev-tokens"})
      : images_(dir_.path() + "/images"), ready_(dir_.path() + "/ready") {
    std::filesystem::create_directories(images_);
    std::vector<std::string> argv = {binary,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--ready-file",
                                     ready_,
                                     "--data-dir",
                                     dir_.path() + "/data",
                                     "--image-root",
                                     images_,
                                     "--log-level",
                                     "debug"};
    argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
    pid_ = Spawn(argv, {}, dir_.path() + "/stdout", dir_.path() + "/stderr");
  }
  ~MetaldProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGTERM);
      if (!WaitExit(pid_, std::chrono::seconds(30))) {
        ::kill(pid_, SIGKILL);
        WaitExit(pid_, std::chrono::seconds(10));
      }
    }
  }

  // Waits for the ready file; the first address, or "" when the daemon exited or did not get
  // ready within `timeout`.
  std::string WaitReady(std::chrono::seconds timeout = std::chrono::seconds(120)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      std::string text = ReadWholeFile(ready_);
      if (!text.empty()) {
        address_ = text.substr(0, text.find('\n'));
        return address_;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return "";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return "";
  }

  // Sends SIGTERM and returns the exit code (nullopt when it did not exit within 60 s).
  // An exited daemon's code is returned as is.
  std::optional<int> Terminate() {
    if (exited_) return exit_code_;
    ::kill(pid_, SIGTERM);
    std::optional<int> code = WaitExit(pid_, std::chrono::seconds(60));
    if (code) {
      exited_ = true;
      exit_code_ = code;
    }
    return code;
  }

  std::string Stderr() const { return ReadWholeFile(dir_.path() + "/stderr"); }
  const std::string& address() const { return address_; }
  const std::string& ready_file() const { return ready_; }
  const std::string& dir() const { return dir_.path(); }

 private:
  TempDir dir_;
  std::string images_;
  std::string ready_;
  std::string address_;
  pid_t pid_ = -1;
  bool exited_ = false;
  std::optional<int> exit_code_;
};

}  // namespace metald::daemon::testing

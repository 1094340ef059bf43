#pragma once
// CommandRunner: the one door through which metald/net changes the host (`ip`, `nft`, `tc`).
// Everything the network layer does to the kernel is a command run through this interface, so a
// test can wrap it and make any step fail on purpose (leveldb's Env idea, style.md rule 12).
//
// Thread-safety: implementations must be safe to call from several threads at once.

#include <memory>
#include <string>
#include <vector>

#include "metald/base/status.h"

namespace metald::net {

struct Command {
  // argv[0] is looked up in PATH. Never passed through a shell.
  std::vector<std::string> argv;
  // Written to the child's stdin, which is then closed (for `nft -f -`, `ip -batch -`).
  std::string stdin_data;

  // "ip link add ..." for messages (no quoting; for humans).
  std::string ToString() const;
};

struct CommandResult {
  int exit_code = 0;  // The exit status; 128 + signal number when killed by a signal.
  std::string stdout_data;
  std::string stderr_data;
};

class CommandRunner {
 public:
  virtual ~CommandRunner() = default;
  // Runs `command` to completion. An OK Result means the command ran (whatever its exit code);
  // an error means it could not be started or its pipes failed (internal / unavailable).
  virtual base::Result<CommandResult> Run(const Command& command) = 0;
};

// Runs commands as child processes (posix_spawnp, stdin/stdout/stderr on pipes). Stateless and
// thread-safe.
std::unique_ptr<CommandRunner> NewSubprocessRunner();

// Runs `command` and turns a non-zero exit into an error:
// internal "<argv...> exited with N: <stderr, trimmed>". Returns stdout on success.
base::Result<std::string> RunChecked(CommandRunner& runner, const Command& command);

}  // namespace metald::net

#pragma once
// Start here. metald/cli: `metalctl`, the command-line client of metald's public API
// (metald.v1.VmService over Connect, HTTP/1.1, TCP or unix socket), like cloud-hypervisor's
// ch-remote. It uses only base/, rpc/ (client side) and the generated metald/v1 code: it is a
// client like any other, never a shortcut into the daemon (style.md layer 6).
//
//   metalctl [--server URL] [--token T] [--output table|json] [--timeout 60s] COMMAND ...
//
// Commands: create, boot, pause, resume, reboot, shutdown, delete, get, list, wait, watch
// (README.md has the flags of each).
//
// Threading: RunMetalctl runs on the calling thread; `watch` blocks it until the stream ends or
// the process is interrupted.

#include <ostream>
#include <string>
#include <vector>

namespace metald::cli {

// Exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitServerError = 1;  // The server answered with an error.
inline constexpr int kExitUsage = 2;        // Bad command line.
inline constexpr int kExitUnreachable = 3;  // No answer from the server (cannot connect).

// Runs one metalctl command. `args[0]` is the program name. Results go to `out`; errors go to
// `err` as one line "metalctl: <code>: <message>" (server errors) or
// "metalctl: cannot reach <server>: <why>". METALD_SERVER and METALD_TOKEN are read from the
// process environment when --server / --token are not given.
int RunMetalctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace metald::cli

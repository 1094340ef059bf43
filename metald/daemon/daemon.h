#pragma once
// Start here. metald/daemon (style.md layer 6): the composition root of the `metald` binary — the
// only code that knows every concrete class. config.h turns flags and METALD_* variables into a
// Config; Run() builds every component from it, serves until SIGINT or SIGTERM and shuts down.
//
// Wiring, in order: logger → metrics registry (+ process metrics) → data directory →
// authenticator (JWT key files read here) → store (<data-dir>/metald.db) → process spawner →
// accelerator choice → backend → host network (--network) → VM service (start-up recovery) →
// router (observability interceptor, metald.v1.VmService, /healthz, /readyz, /metrics,
// grpc.health.v1.Health) → rpc server → ready file → "metald ready".
//
// Shutdown: health NOT_SERVING, rpc server Shutdown (5 s grace for in-flight calls), then the
// service and everything below it are destroyed. VMM processes keep running (they live in their
// own sessions); the next metald re-adopts them.
//
// Threading: Run() is called once, from main(), before any other thread exists; it blocks SIGINT
// and SIGTERM in the calling thread (so every thread started later inherits the mask) and waits
// for them with sigtimedwait.

#include <string>
#include <vector>

#include "metald/base/status.h"
#include "metald/daemon/config.h"

namespace metald::daemon {

// Exit codes of the metald binary.
inline constexpr int kExitOk = 0;            // Clean shutdown after SIGINT / SIGTERM.
inline constexpr int kExitStartupError = 1;  // A component could not start (port in use, ...).
inline constexpr int kExitUsage = 2;         // Bad configuration (ParseConfig).

// Runs the daemon with a validated `config` until SIGINT or SIGTERM. Returns kExitOk after a clean
// shutdown, or kExitStartupError after printing one line "metald: <what failed>: <why>" on stderr
// when a component cannot start. REQUIRES: called from the main thread before any thread starts.
int Run(const Config& config);

// Writes `lines` (each followed by '\n') to `path` atomically: a temporary file in the same
// directory, then rename(2). Errors name the path.
base::Status WriteFileAtomically(const std::string& path, const std::vector<std::string>& lines);

}  // namespace metald::daemon

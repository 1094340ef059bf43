// metald: the VM lifecycle daemon. See daemon.h for the wiring and config.h for the flags
// (`metald --help`). Exit codes: 0 clean shutdown on SIGINT/SIGTERM, 1 a component could not
// start, 2 bad configuration.

#include <cstdio>
#include <string>
#include <vector>

#include "metald/daemon/config.h"
#include "metald/daemon/daemon.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  metald::daemon::ParseOutcome parsed =
      metald::daemon::ParseConfig(args, metald::daemon::ProcessEnv());
  if (!parsed.run) {
    std::fprintf(parsed.exit_code == 0 ? stdout : stderr, "%s\n", parsed.output.c_str());
    return parsed.exit_code;
  }
  return metald::daemon::Run(parsed.config);
}

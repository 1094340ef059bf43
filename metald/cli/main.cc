// metalctl: the command-line client of metald. See metalctl.h and README.md.

#include <iostream>
#include <string>
#include <vector>

#include "metald/cli/metalctl.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  return metald::cli::RunMetalctl(args, std::cout, std::cerr);
}

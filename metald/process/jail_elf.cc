// ElfInterpreter / SharedObjects (jail_elf.h).

#include "metald/process/jail_elf.h"

#include <elf.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

namespace metald::process {

base::Result<std::string> ElfInterpreter(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return base::NotFoundError("Cannot open " + path);
  Elf64_Ehdr eh;
  if (!in.read(reinterpret_cast<char*>(&eh), sizeof eh) ||
      std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
      eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_phentsize != sizeof(Elf64_Phdr)) {
    return base::InvalidArgumentError(path + " is not a 64-bit little-endian ELF file");
  }
  for (int i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    in.seekg(static_cast<std::streamoff>(eh.e_phoff + static_cast<uint64_t>(i) * sizeof ph));
    if (!in.read(reinterpret_cast<char*>(&ph), sizeof ph)) {
      return base::InvalidArgumentError(path + ": truncated program headers");
    }
    if (ph.p_type != PT_INTERP) continue;
    if (ph.p_filesz == 0 || ph.p_filesz > 4096) {
      return base::InvalidArgumentError(path + ": bad PT_INTERP size");
    }
    std::string interp(ph.p_filesz, '\0');
    in.seekg(static_cast<std::streamoff>(ph.p_offset));
    if (!in.read(interp.data(), static_cast<std::streamsize>(ph.p_filesz))) {
      return base::InvalidArgumentError(path + ": truncated PT_INTERP");
    }
    interp.resize(std::strlen(interp.c_str()));
    if (interp.empty() || interp[0] != '/') {
      return base::InvalidArgumentError(path + ": PT_INTERP is not an absolute path");
    }
    return interp;
  }
  return std::string();
}

base::Result<std::vector<std::string>> SharedObjects(const std::string& elf,
                                                     ProcessSpawner* spawner) {
  ASSIGN_OR_RETURN(std::string interp, ElfInterpreter(elf));
  if (interp.empty()) return std::vector<std::string>{};
  char tmpl[] = "/tmp/metald-ldlist.XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) return base::InternalError("mkstemp for the loader's list failed");
  ::close(fd);
  std::string out_path = tmpl;
  SpawnSpec spec;
  spec.argv = {interp, "--list", elf};
  spec.output_file = out_path;
  base::Result<ProcessId> id = spawner->Spawn(spec);
  base::Result<ExitInfo> exit = base::InternalError("not started");
  if (id.ok()) exit = spawner->WaitForExit(*id, std::chrono::milliseconds(60'000));
  std::stringstream ss;
  ss << std::ifstream(out_path).rdbuf();
  ::unlink(out_path.c_str());
  if (!id.ok()) return id.status().WithContext("SharedObjects " + elf);
  if (!exit.ok()) {
    (void)spawner->Kill(*id, std::chrono::milliseconds(10'000));
    return exit.status().WithContext("SharedObjects " + elf);
  }
  std::string text = ss.str();
  if (!exit->clean()) {
    return base::FailedPreconditionError("SharedObjects " + elf + ": " + interp +
                                         " --list failed (" + ToString(*exit) + "): " + text);
  }
  // Lines: "\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)", "\t/lib64/ld-linux...
  // (0x...)",
  // "\tlinux-vdso.so.1 (0x...)" (in the kernel, no file), "\tlibfoo.so => not found".
  std::vector<std::string> out = {interp};
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("not found") != std::string::npos) {
      return base::FailedPreconditionError("SharedObjects " + elf + ": " + line);
    }
    size_t arrow = line.find("=> ");
    size_t start = arrow == std::string::npos ? line.find_first_not_of(" \t") : arrow + 3;
    if (start == std::string::npos || line[start] != '/') continue;
    size_t end = line.find(" (0x", start);
    std::string path =
        line.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (std::find(out.begin(), out.end(), path) == out.end()) out.push_back(path);
  }
  return out;
}

}  // namespace metald::process

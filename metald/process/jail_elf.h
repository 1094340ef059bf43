#pragma once
// What a dynamically linked program needs in a jail: its ELF interpreter and the shared objects
// the interpreter maps for it. Used to put a VMM binary (e.g. qemu-system-x86_64) and its
// libraries into a chroot; a static binary (Firecracker, Cloud Hypervisor releases, busybox-static)
// needs nothing beyond itself.
//
// Thread-safety: free functions without shared state.

#include <string>
#include <vector>

#include "metald/base/status.h"
#include "metald/process/process.h"

namespace metald::process {

// The PT_INTERP path of the ELF file at `path` (e.g. "/lib64/ld-linux-x86-64.so.2"); empty for a
// static executable. invalid_argument when the file is not a 64-bit little-endian ELF file.
base::Result<std::string> ElfInterpreter(const std::string& path);

// The absolute paths of the interpreter and every shared object it loads for `elf`, in the
// loader's order, without duplicates; empty for a static executable. Runs
// "<interpreter> --list <elf>" through `spawner`: the loader maps the objects and prints them
// without running any of their code. Paths are as the loader found them (they may be symlinks;
// PrepareJail resolves them). failed_precondition when an object is missing ("not found").
base::Result<std::vector<std::string>> SharedObjects(const std::string& elf,
                                                     ProcessSpawner* spawner);

}  // namespace metald::process

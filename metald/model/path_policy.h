#pragma once
// Confinement of customer-given paths (kernel, initrd, drives) to the configured image roots.
//
// Two steps, both required before a path reaches a VMM:
//  1. ResolveUnderRoots: lexical and pure. Refuses relative paths, any ".." component, and
//     anything not strictly below a root; returns the normalised path.
//  2. ResolveExistingUnderRoots: does step 1, then resolves symlinks (realpath) of the path and
//     of the roots and refuses a real path outside every real root, so a symlink inside a root
//     cannot point at /etc/shadow. This is the only OS effect in model/, and it goes through the
//     injectable RealpathFn.
// A check-then-use window remains (the file can be swapped after the check); the jail, which
// exposes only the resolved files inside its chroot, closes it.
//
// Thread-safety: pure functions (the default RealpathFn is thread-safe).

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "metald/base/status.h"

namespace metald::model {

// Lexically confines `path` to `roots`. Roots must be absolute; they are normalised too ("/a/b/"
// and "/a//b" are "/a/b"). Returns the normalised path ("//img/./k" -> "/img/k"). Errors are
// invalid_argument and start with `field`: "boot.kernel_path must be an absolute path",
// "... must not contain '..'", "... is not under an image root".
base::Result<std::string> ResolveUnderRoots(std::string_view path,
                                            const std::vector<std::string>& roots,
                                            std::string_view field = "path");

// realpath(3): the canonical absolute path of an existing file. Errors: not_found when the file
// (or a directory on the way) does not exist, permission_denied, invalid_argument otherwise.
using RealpathFn = std::function<base::Result<std::string>(const std::string& path)>;
// RealpathFn over ::realpath.
base::Result<std::string> SystemRealpath(const std::string& path);

// Step 1 then step 2 (see top). Returns the real path. A missing file is invalid_argument
// "<field> \"<path>\" does not exist"; a symlink escaping the roots is invalid_argument
// "<field> resolves outside the image roots". Roots that do not exist are ignored.
base::Result<std::string> ResolveExistingUnderRoots(std::string_view path,
                                                    const std::vector<std::string>& roots,
                                                    std::string_view field = "path",
                                                    const RealpathFn& realpath = SystemRealpath);

}  // namespace metald::model

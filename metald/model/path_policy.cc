#include "metald/model/path_policy.h"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <optional>

namespace metald::model {
namespace {

base::Status Invalid(std::string_view field, std::string_view what) {
  std::string msg(field);
  msg += ' ';
  msg += what;
  return base::InvalidArgumentError(std::move(msg));
}

// Collapses repeated '/' and '.' components. Returns nullopt when the path is relative, empty or
// has a ".." component. The result has no trailing '/' (except the root itself, "/").
std::optional<std::string> Normalize(std::string_view path, bool* dotdot) {
  *dotdot = false;
  if (path.empty() || path[0] != '/') return std::nullopt;
  std::string out;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t j = i;
    while (j < path.size() && path[j] != '/') ++j;
    std::string_view comp = path.substr(i, j - i);
    i = j;
    if (comp.empty() || comp == ".") continue;
    if (comp == "..") {
      *dotdot = true;
      return std::nullopt;
    }
    out += '/';
    out += comp;
  }
  if (out.empty()) out.push_back('/');
  return out;
}

// True when `path` is strictly below `root` (both normalised).
bool StrictlyUnder(const std::string& path, const std::string& root) {
  if (root == "/") return path != "/";
  return path.size() > root.size() + 1 && path.compare(0, root.size(), root) == 0 &&
         path[root.size()] == '/';
}

}  // namespace

base::Result<std::string> ResolveUnderRoots(std::string_view path,
                                            const std::vector<std::string>& roots,
                                            std::string_view field) {
  if (path.empty()) return Invalid(field, "must not be empty");
  if (path.find('\0') != std::string_view::npos) return Invalid(field, "must not contain NUL");
  bool dotdot = false;
  std::optional<std::string> norm = Normalize(path, &dotdot);
  if (dotdot) return Invalid(field, "must not contain '..'");
  if (!norm) return Invalid(field, "must be an absolute path");
  for (const std::string& root : roots) {
    bool root_dotdot = false;
    std::optional<std::string> nroot = Normalize(root, &root_dotdot);
    if (!nroot) continue;  // A misconfigured root confines nothing.
    if (StrictlyUnder(*norm, *nroot)) return *norm;
  }
  return Invalid(field, "is not under an image root");
}

base::Result<std::string> SystemRealpath(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) {
    const int err = errno;
    std::string msg = "realpath ";
    msg += path;
    msg += ": ";
    msg += std::strerror(err);
    if (err == ENOENT || err == ENOTDIR) return base::NotFoundError(std::move(msg));
    if (err == EACCES) return base::PermissionDeniedError(std::move(msg));
    return base::InvalidArgumentError(std::move(msg));
  }
  return std::string(buf);
}

base::Result<std::string> ResolveExistingUnderRoots(std::string_view path,
                                                    const std::vector<std::string>& roots,
                                                    std::string_view field,
                                                    const RealpathFn& realpath) {
  ASSIGN_OR_RETURN(std::string lexical, ResolveUnderRoots(path, roots, field));
  base::Result<std::string> real = realpath(lexical);
  if (!real.ok()) {
    std::string quoted = "\"";
    quoted += lexical;
    quoted += "\" ";
    if (real.status().code() == base::StatusCode::kNotFound) {
      return Invalid(field, quoted + "does not exist");
    }
    if (real.status().code() == base::StatusCode::kPermissionDenied) {
      return Invalid(field, quoted + "is not accessible");
    }
    return Invalid(field, quoted + "cannot be resolved");
  }
  for (const std::string& root : roots) {
    base::Result<std::string> real_root = realpath(root);
    if (!real_root.ok()) continue;
    if (StrictlyUnder(*real, *real_root)) return *real;
  }
  return Invalid(field, "resolves outside the image roots");
}

}  // namespace metald::model

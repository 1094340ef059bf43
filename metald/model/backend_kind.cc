#include "metald/model/backend_kind.h"

namespace metald::model {

std::string_view BackendName(BackendKind kind) {
  switch (kind) {
    case BackendKind::kQemu:
      return "qemu";
    case BackendKind::kFirecracker:
      return "firecracker";
    case BackendKind::kCloudHypervisor:
      return "cloudhypervisor";
  }
  return "unknown";
}

std::optional<BackendKind> ParseBackendKind(std::string_view name) {
  for (BackendKind k :
       {BackendKind::kQemu, BackendKind::kFirecracker, BackendKind::kCloudHypervisor}) {
    if (BackendName(k) == name) return k;
  }
  return std::nullopt;
}

}  // namespace metald::model

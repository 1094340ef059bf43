#include "metald/backend/registry.h"

#include <string>

namespace metald::backend {

base::Status CheckAvailable(const BackendOptions& options) {
  base::Result<std::unique_ptr<Backend>> backend = MakeBackend(options);
  if (!backend.ok()) return backend.status();
  return (*backend)->HealthCheck();
}

base::Result<std::unique_ptr<Backend>> MakeBackend(const BackendOptions& options) {
  if (options.spawner == nullptr) {
    return base::InvalidArgumentError("Backend options need a process spawner");
  }
  switch (options.kind) {
    case model::BackendKind::kQemu:
      return qemu::NewQemuBackend(options.qemu, options.spawner);
    case model::BackendKind::kFirecracker:
    case model::BackendKind::kCloudHypervisor:
      break;
  }
  return base::UnimplementedError("Backend " + std::string(model::BackendName(options.kind)) +
                                  " is not built yet");
}

}  // namespace metald::backend

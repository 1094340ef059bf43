#pragma once
// Which hypervisor runs a VM. Chosen per daemon (METALD_BACKEND) and stored with every VM so that
// recovery after a restart with a different setting still knows how to talk to old VMs.
// Thread-safety: pure functions.

#include <optional>
#include <string_view>

namespace metald::model {

enum class BackendKind { kQemu, kFirecracker, kCloudHypervisor };

// "qemu", "firecracker", "cloudhypervisor" (the METALD_BACKEND values; stable, stored).
std::string_view BackendName(BackendKind kind);
// Inverse of BackendName; nullopt for anything else.
std::optional<BackendKind> ParseBackendKind(std::string_view name);

}  // namespace metald::model

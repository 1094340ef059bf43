#pragma once
// The backend factory: the only place that knows every concrete backend (CH's hypervisor::new()).
// The daemon picks one kind per host (METALD_BACKEND, default qemu) and hands the service the
// resulting Backend.
//
// Thread-safety: pure functions over their arguments.

#include <memory>

#include "metald/backend/backend.h"
#include "metald/backend/qemu/qemu_backend.h"
#include "metald/model/backend_kind.h"
#include "metald/process/process.h"

namespace metald::backend {

struct BackendOptions {
  // Which VMM. Default: qemu.
  model::BackendKind kind = model::BackendKind::kQemu;
  // Starts VMM processes. Required; must outlive the backend.
  process::ProcessSpawner* spawner = nullptr;
  // Settings of the QEMU backend (used when kind is qemu).
  qemu::QemuOptions qemu;
};

// OK when `options.kind` can run VMs on this host; unavailable naming what is missing, or
// unimplemented for a backend this build does not have yet.
base::Status CheckAvailable(const BackendOptions& options);

// The backend for `options.kind`. invalid_argument without a spawner; unimplemented for a backend
// this build does not have. Does not require CheckAvailable to pass (HealthCheck reports it).
base::Result<std::unique_ptr<Backend>> MakeBackend(const BackendOptions& options);

}  // namespace metald::backend

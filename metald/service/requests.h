#pragma once
// The request catalogue (style.md rule 2): every VmService operation once, as a request struct, a
// response struct and the states that allow it. One word runs through every layer: RPC `BootVm` →
// service::BootVmRequest → VmService::BootVm() → Backend::Boot() → metric
// metald_rpc_requests_total{method="BootVm"} → error context "BootVm vm-…: ".
//
// Plain values, no proto types (those stop at api/). Thread-safety: values.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "metald/model/backend_kind.h"
#include "metald/model/vm_spec.h"
#include "metald/model/vm_state.h"

namespace metald::service {

// Who is calling and until when. api/ builds it from the authenticated principal and the RPC's
// deadline and cancellation; tests build it directly.
struct Caller {
  // The customer the call acts for (auth::Principal::customer_id). Required: every operation is
  // confined to this customer's VMs; another customer's VM is not_found, exactly like a missing
  // one.
  std::string customer_id;
  // Calls that wait (WaitVm, WatchVmEvents, waiting for a busy VM) give up at this time with
  // deadline_exceeded. nullopt = no deadline.
  std::optional<std::chrono::steady_clock::time_point> deadline;
  // Polled by calls that wait; true ends them with `cancelled`. Empty = never cancelled.
  std::function<bool()> cancelled;
};

// One network interface as the VM has it (the spec's request, filled in by the daemon).
struct VmNic {
  std::string id;
  std::string mac_address;   // "02:…"; always set.
  std::string ipv4_address;  // CIDR "10.213.0.2/16"; empty when the VM has no IPv4.
  std::string ipv4_gateway;  // "10.213.0.1"; empty when none.
  std::string ipv6_address;  // CIDR; empty when none.
  std::string ipv6_gateway;
  std::string tap_device;  // The TAP device the VMM uses (inside the VM's network namespace).
  friend bool operator==(const VmNic&, const VmNic&) = default;
};

// A VM as a customer sees it (GetVmInfo, ListVms, CreateVm, WaitVm).
struct Vm {
  std::string id;
  std::string customer_id;
  model::VmState state = model::VmState::kCreating;
  model::BackendKind backend = model::BackendKind::kQemu;
  // The spec as the customer sent it (paths as given, not as resolved), with the service's
  // defaults and assignments filled in (e.g. network[i].mac_address).
  model::VmSpec spec;
  // Why the VM entered its current state, and a customer-safe detail (e.g. "VMM exited: signal
  // 9"); never internal paths or secrets.
  model::TransitionReason state_reason = model::TransitionReason::kUserRequest;
  std::string state_message;
  std::vector<VmNic> network;
  int64_t pid = 0;          // The VMM process while there is one, else 0.
  int64_t incarnation = 0;  // Number of VMM processes the VM has had (billing counters reset).
  int64_t created_unix_ns = 0;
  int64_t updated_unix_ns = 0;
  int64_t booted_unix_ns = 0;  // Last transition into RUNNING from BOOTING; 0 = never booted.
};

// CreateVm — no precondition. Validates `spec` (invalid_argument naming the field, e.g.
// "cpu.vcpu_count must be between 1 and 32"), resolves every path under the image roots
// (invalid_argument "boot.kernel_path: …" for a path outside them, with "..", or missing), checks
// the customer's quota (resource_exhausted), then CREATING → network set up → VMM started with
// the guest paused → CREATED. On any failure after validation everything done so far is undone
// and the VM record removed: a failed CreateVm leaves no VM, process, file, device or lease.
// With an idempotency key this customer used before: the VM that call created (created = false)
// when the spec is equal, already_exists when it differs.
struct CreateVmRequest {
  model::VmSpec spec;
  std::string idempotency_key;  // Optional; at most 128 bytes.
};
struct CreateVmResponse {
  Vm vm;
  bool created = true;
};

// BootVm — CREATED or STOPPED → BOOTING → RUNNING. A STOPPED VM gets a new VMM process (a new
// incarnation) first. Backend failure: BOOTING → FAILED, and the error is returned.
struct BootVmRequest {
  std::string vm_id;
};

// PauseVm — RUNNING → PAUSING → PAUSED (vCPUs frozen, memory kept).
struct PauseVmRequest {
  std::string vm_id;
};

// ResumeVm — PAUSED → RESUMING → RUNNING.
struct ResumeVmRequest {
  std::string vm_id;
};

// RebootVm — RUNNING → REBOOTING → RUNNING. A hard reset of the guest inside the same VMM process
// (the incarnation does not change).
struct RebootVmRequest {
  std::string vm_id;
};

// ShutdownVm — RUNNING or PAUSED → SHUTTING_DOWN → STOPPED. Graceful: the guest is asked (ACPI
// power button) and forced after `timeout`; force: the VMM is stopped at once. The VM's network
// (namespace, TAP, lease) is kept so that BootVm can start it again with the same address.
struct ShutdownVmRequest {
  std::string vm_id;
  bool force = false;
  std::chrono::milliseconds timeout{30'000};  // 1 ms .. 10 min; graceful only.
};
// Also the response of Boot, Pause, Resume and Reboot: the state the VM ended in.
struct VmStateResponse {
  model::VmState state = model::VmState::kCreating;
};
struct ShutdownVmResponse {
  model::VmState state = model::VmState::kStopped;
  bool graceful = false;  // The guest powered itself off within the timeout.
};

// DeleteVm — CREATED, STOPPED or FAILED → DELETING → gone: the VMM process, every file of the VM,
// its network namespace, TAP, veth, firewall rules and address lease are removed, then the
// record. With force, a RUNNING or PAUSED VM is shut down (forced) first. The transition log keeps
// the VM's history. A VM left in DELETING by a delete that failed half-way (e.g. a network
// teardown error) may be deleted again: the call finishes the job.
struct DeleteVmRequest {
  std::string vm_id;
  bool force = false;
};

// GetVmInfo — any state.
struct GetVmInfoRequest {
  std::string vm_id;
};

// ListVms — the caller's VMs only, ordered by id, keyset-paginated.
struct ListVmsRequest {
  int page_size = 0;  // 0 = default (100); at most 1000 (larger is lowered); negative invalid.
  std::string page_token;
  std::vector<model::VmState> states;  // Empty = all.
};
struct ListVmsResponse {
  std::vector<Vm> vms;
  std::string next_page_token;  // Empty on the last page.
};

// One state change, from the transition log.
struct VmEvent {
  int64_t seq = 0;  // Strictly increasing across all VMs; the resume cursor.
  std::string vm_id;
  std::optional<model::VmState> from;  // nullopt for the creation event (→ CREATING).
  model::VmState to = model::VmState::kCreating;
  model::TransitionReason reason = model::TransitionReason::kUserRequest;
  std::string message;  // Customer-safe detail.
  int64_t at_unix_ns = 0;
};

// WatchVmEvents — streams the caller's state changes (all VMs, or one), oldest first, until the
// sink returns false or the caller is cancelled / past its deadline (then OK). A deleted VM's
// events end with → DELETED. An unknown vm_id (or another customer's) is not_found.
// A watch of one VM (vm_id set) ends with OK right after that VM's → DELETED event.
struct WatchVmEventsRequest {
  std::string vm_id;                 // Empty = every VM of the caller.
  std::optional<int64_t> after_seq;  // Resume after this event; nullopt = only new events.
};

// WaitVm — returns the VM once it is in one of `states` (at once if it already is);
// deadline_exceeded after `timeout` (or the caller's deadline, whichever is first); not_found
// when the VM does not exist or is deleted while waiting.
struct WaitVmRequest {
  std::string vm_id;
  std::vector<model::VmState> states;         // Required, non-empty.
  std::chrono::milliseconds timeout{60'000};  // 1 ms .. 10 min.
};

}  // namespace metald::service

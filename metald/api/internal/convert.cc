#include "metald/api/internal/convert.h"

#include <charconv>
#include <limits>
#include <regex>
#include <string>
#include <utility>

#include "metald/model/vm_id.h"

namespace metald::api::internal {
namespace {

using base::InvalidArgumentError;

std::string Indexed(std::string_view list, int index) {
  return std::string(list) + "[" + std::to_string(index) + "]";
}

base::Result<uint64_t> RateFromProto(const v1::RateLimit& limit, const std::string& field) {
  if (limit.ops_per_sec() != 0) {
    return InvalidArgumentError(field + ".ops_per_sec: not supported");
  }
  return limit.bandwidth_bytes_per_sec();
}

}  // namespace

base::Result<model::VmSpec> VmSpecFromProto(const v1::VmConfig& config) {
  model::VmSpec spec;
  if (config.has_cpu()) spec.cpu.vcpu_count = config.cpu().vcpu_count();
  if (config.has_memory()) spec.memory.size_bytes = config.memory().size_bytes();
  spec.boot.kernel_path = config.boot().kernel_path();
  spec.boot.initrd_path = config.boot().initrd_path();
  spec.boot.kernel_args = config.boot().kernel_args();

  spec.storage.reserve(config.storage_size());
  for (const v1::StorageDevice& device : config.storage()) {
    model::StorageSpec& s = spec.storage.emplace_back();
    s.id = device.id();
    s.path = device.path();
    s.read_only = device.read_only();
    s.root = device.is_root();
  }

  spec.network.reserve(config.network_size());
  for (int i = 0; i < config.network_size(); ++i) {
    const v1::NetworkInterface& nic = config.network(i);
    const std::string field = Indexed("network", i);
    model::NetworkSpec& n = spec.network.emplace_back();
    n.id = nic.id();
    n.mac_address = nic.mac_address();
    n.ipv4_address = nic.ipv4_address();
    n.ipv6_address = nic.ipv6_address();
    if (!nic.ipv4_gateway().empty() && !nic.ipv6_gateway().empty()) {
      return InvalidArgumentError(field + ": set ipv4_gateway or ipv6_gateway, not both");
    }
    // The model keeps one gateway; its family is recovered from its text on the way back, so
    // each proto field must hold its own family.
    if (nic.ipv4_gateway().find(':') != std::string::npos) {
      return InvalidArgumentError(field + ".ipv4_gateway must be an IPv4 address");
    }
    if (!nic.ipv6_gateway().empty() && nic.ipv6_gateway().find(':') == std::string::npos) {
      return InvalidArgumentError(field + ".ipv6_gateway must be an IPv6 address");
    }
    n.gateway = nic.ipv4_gateway().empty() ? nic.ipv6_gateway() : nic.ipv4_gateway();
    ASSIGN_OR_RETURN(n.rx_bytes_per_sec,
                     RateFromProto(nic.rx_rate_limit(), field + ".rx_rate_limit"));
    ASSIGN_OR_RETURN(n.tx_bytes_per_sec,
                     RateFromProto(nic.tx_rate_limit(), field + ".tx_rate_limit"));
  }

  spec.console.enabled = config.console().enabled();
  spec.console.log_file = config.console().log_file();
  for (const auto& [key, value] : config.metadata()) spec.metadata.emplace(key, value);
  return spec;
}

void VmSpecToProto(const model::VmSpec& spec, v1::VmConfig* out) {
  out->Clear();
  out->mutable_cpu()->set_vcpu_count(spec.cpu.vcpu_count);
  out->mutable_memory()->set_size_bytes(spec.memory.size_bytes);
  v1::BootConfig* boot = out->mutable_boot();
  boot->set_kernel_path(spec.boot.kernel_path);
  boot->set_initrd_path(spec.boot.initrd_path);
  boot->set_kernel_args(spec.boot.kernel_args);
  for (const model::StorageSpec& s : spec.storage) {
    v1::StorageDevice* device = out->add_storage();
    device->set_id(s.id);
    device->set_path(s.path);
    device->set_read_only(s.read_only);
    device->set_is_root(s.root);
  }
  for (const model::NetworkSpec& n : spec.network) {
    v1::NetworkInterface* nic = out->add_network();
    nic->set_id(n.id);
    nic->set_mac_address(n.mac_address);
    nic->set_ipv4_address(n.ipv4_address);
    nic->set_ipv6_address(n.ipv6_address);
    if (n.gateway.find(':') != std::string::npos) {
      nic->set_ipv6_gateway(n.gateway);
    } else {
      nic->set_ipv4_gateway(n.gateway);
    }
    if (n.rx_bytes_per_sec != 0) {
      nic->mutable_rx_rate_limit()->set_bandwidth_bytes_per_sec(n.rx_bytes_per_sec);
    }
    if (n.tx_bytes_per_sec != 0) {
      nic->mutable_tx_rate_limit()->set_bandwidth_bytes_per_sec(n.tx_bytes_per_sec);
    }
  }
  out->mutable_console()->set_enabled(spec.console.enabled);
  out->mutable_console()->set_log_file(spec.console.log_file);
  for (const auto& [key, value] : spec.metadata) (*out->mutable_metadata())[key] = value;
}

std::string RewriteSpecFieldPaths(std::string_view message, const v1::VmConfig& sent) {
  // Runs on the error path only; a regex is clear enough here.
  static const std::regex kPath(R"((storage|network)\[([0-9]{1,9})\]\.([A-Za-z_]+))");
  std::string text(message);
  std::string result;
  size_t last = 0;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), kPath);
       it != std::sregex_iterator(); ++it) {
    const std::smatch& m = *it;
    const std::string list = m[1];
    const int index = std::stoi(m[2]);
    const std::string member = m[3];
    std::string replacement;
    if (list == "storage" && member == "root") {
      replacement = "is_root";
    } else if (list == "network" && member == "gateway") {
      const bool v6 = index < sent.network_size() && !sent.network(index).ipv6_gateway().empty();
      replacement = v6 ? "ipv6_gateway" : "ipv4_gateway";
    } else if (list == "network" && member == "rx_bytes_per_sec") {
      replacement = "rx_rate_limit.bandwidth_bytes_per_sec";
    } else if (list == "network" && member == "tx_bytes_per_sec") {
      replacement = "tx_rate_limit.bandwidth_bytes_per_sec";
    } else {
      continue;
    }
    const size_t member_pos = static_cast<size_t>(m.position(3));
    result.append(text, last, member_pos - last);
    result.append(replacement);
    last = member_pos + member.size();
  }
  result.append(text, last, std::string::npos);
  return result;
}

base::Result<model::VmState> VmStateFromProto(int value, std::string_view field) {
  switch (value) {
    case v1::VM_STATE_CREATING:
      return model::VmState::kCreating;
    case v1::VM_STATE_CREATED:
      return model::VmState::kCreated;
    case v1::VM_STATE_BOOTING:
      return model::VmState::kBooting;
    case v1::VM_STATE_RUNNING:
      return model::VmState::kRunning;
    case v1::VM_STATE_PAUSING:
      return model::VmState::kPausing;
    case v1::VM_STATE_PAUSED:
      return model::VmState::kPaused;
    case v1::VM_STATE_RESUMING:
      return model::VmState::kResuming;
    case v1::VM_STATE_REBOOTING:
      return model::VmState::kRebooting;
    case v1::VM_STATE_SHUTTING_DOWN:
      return model::VmState::kShuttingDown;
    case v1::VM_STATE_STOPPED:
      return model::VmState::kStopped;
    case v1::VM_STATE_FAILED:
      return model::VmState::kFailed;
    case v1::VM_STATE_DELETING:
      return model::VmState::kDeleting;
    case v1::VM_STATE_DELETED:
      return model::VmState::kDeleted;
    case v1::VM_STATE_UNSPECIFIED:
      return InvalidArgumentError(std::string(field) + " must not be VM_STATE_UNSPECIFIED");
    default:
      return InvalidArgumentError(std::string(field) + " is not a known VM state (" +
                                  std::to_string(value) + ")");
  }
}

v1::VmState VmStateToProto(model::VmState state) {
  switch (state) {
    case model::VmState::kCreating:
      return v1::VM_STATE_CREATING;
    case model::VmState::kCreated:
      return v1::VM_STATE_CREATED;
    case model::VmState::kBooting:
      return v1::VM_STATE_BOOTING;
    case model::VmState::kRunning:
      return v1::VM_STATE_RUNNING;
    case model::VmState::kPausing:
      return v1::VM_STATE_PAUSING;
    case model::VmState::kPaused:
      return v1::VM_STATE_PAUSED;
    case model::VmState::kResuming:
      return v1::VM_STATE_RESUMING;
    case model::VmState::kRebooting:
      return v1::VM_STATE_REBOOTING;
    case model::VmState::kShuttingDown:
      return v1::VM_STATE_SHUTTING_DOWN;
    case model::VmState::kStopped:
      return v1::VM_STATE_STOPPED;
    case model::VmState::kFailed:
      return v1::VM_STATE_FAILED;
    case model::VmState::kDeleting:
      return v1::VM_STATE_DELETING;
    case model::VmState::kDeleted:
      return v1::VM_STATE_DELETED;
  }
  return v1::VM_STATE_UNSPECIFIED;
}

v1::TransitionReason ReasonToProto(model::TransitionReason reason) {
  switch (reason) {
    case model::TransitionReason::kUserRequest:
      return v1::TRANSITION_REASON_USER_REQUEST;
    case model::TransitionReason::kBackendError:
      return v1::TRANSITION_REASON_BACKEND_ERROR;
    case model::TransitionReason::kGuestShutdown:
      return v1::TRANSITION_REASON_GUEST_SHUTDOWN;
    case model::TransitionReason::kGuestReboot:
      return v1::TRANSITION_REASON_GUEST_REBOOT;
    case model::TransitionReason::kProcessExit:
      return v1::TRANSITION_REASON_PROCESS_EXIT;
    case model::TransitionReason::kCrash:
      return v1::TRANSITION_REASON_CRASH;
    case model::TransitionReason::kTimeout:
      return v1::TRANSITION_REASON_TIMEOUT;
    case model::TransitionReason::kRecovered:
      return v1::TRANSITION_REASON_RECOVERED;
  }
  return v1::TRANSITION_REASON_UNSPECIFIED;
}

v1::BackendKind BackendToProto(model::BackendKind kind) {
  switch (kind) {
    case model::BackendKind::kQemu:
      return v1::BACKEND_KIND_QEMU;
    case model::BackendKind::kFirecracker:
      return v1::BACKEND_KIND_FIRECRACKER;
    case model::BackendKind::kCloudHypervisor:
      return v1::BACKEND_KIND_CLOUD_HYPERVISOR;
  }
  return v1::BACKEND_KIND_UNSPECIFIED;
}

void TimestampFromUnixNs(int64_t unix_ns, google::protobuf::Timestamp* out) {
  constexpr int64_t kNsPerSec = 1'000'000'000;
  int64_t seconds = unix_ns / kNsPerSec;
  int64_t nanos = unix_ns % kNsPerSec;
  if (nanos < 0) {  // Timestamp.nanos is never negative: borrow a second.
    nanos += kNsPerSec;
    seconds -= 1;
  }
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(nanos));
}

base::Result<std::chrono::milliseconds> TimeoutFromProto(const google::protobuf::Duration* duration,
                                                         std::chrono::milliseconds default_value,
                                                         std::string_view field) {
  if (duration == nullptr) return default_value;
  const int64_t seconds = duration->seconds();
  const int32_t nanos = duration->nanos();
  if (nanos <= -1'000'000'000 || nanos >= 1'000'000'000 || (seconds > 0 && nanos < 0) ||
      (seconds < 0 && nanos > 0)) {
    return InvalidArgumentError(std::string(field) + " is not a valid duration");
  }
  if (seconds < 0 || nanos < 0) {
    return InvalidArgumentError(std::string(field) + " must not be negative");
  }
  if (seconds == 0 && nanos == 0) return default_value;
  const int64_t max_seconds = std::chrono::duration_cast<std::chrono::seconds>(kMaxTimeout).count();
  if (seconds > max_seconds || (seconds == max_seconds && nanos > 0)) {
    return InvalidArgumentError(std::string(field) + " must be at most 10 minutes");
  }
  return std::chrono::milliseconds(seconds * 1000 + (nanos + 999'999) / 1'000'000);
}

base::Status CheckVmId(std::string_view vm_id) {
  if (vm_id.empty()) return InvalidArgumentError("vm_id is required");
  if (!model::IsValidVmId(vm_id)) {
    // The id is the client's own input; cap it so a huge value is not echoed back whole.
    constexpr size_t kMaxEcho = 64;
    std::string shown(vm_id.substr(0, kMaxEcho));
    if (vm_id.size() > kMaxEcho) shown += "...";
    return base::NotFoundError("VM " + shown + " not found");
  }
  return base::OkStatus();
}

base::Result<std::optional<int64_t>> CursorFromProto(std::string_view cursor) {
  if (cursor.empty()) return std::optional<int64_t>();
  int64_t seq = 0;
  const char* end = cursor.data() + cursor.size();
  auto [ptr, ec] = std::from_chars(cursor.data(), end, seq);
  if (ec != std::errc() || ptr != end || seq < 0 || cursor[0] == '+' || cursor[0] == '-') {
    return InvalidArgumentError("cursor is not a cursor returned by WatchVmEvents");
  }
  return std::optional<int64_t>(seq);
}

std::string CursorToProto(int64_t seq) { return std::to_string(seq); }

int PageSizeFromProto(uint32_t page_size) {
  return static_cast<int>(page_size > kMaxPageSize ? kMaxPageSize : page_size);
}

void VmToProto(const service::Vm& vm, v1::VmInfo* out) {
  out->Clear();
  out->set_vm_id(vm.id);
  out->set_customer_id(vm.customer_id);
  out->set_state(VmStateToProto(vm.state));
  out->set_backend(BackendToProto(vm.backend));
  VmSpecToProto(vm.spec, out->mutable_config());
  TimestampFromUnixNs(vm.created_unix_ns, out->mutable_created_at());
  TimestampFromUnixNs(vm.updated_unix_ns, out->mutable_updated_at());
  out->set_state_reason(ReasonToProto(vm.state_reason));
  out->set_state_message(vm.state_message);
  for (const service::VmNic& nic : vm.network) {
    v1::NetworkStatus* status = out->add_network();
    status->set_id(nic.id);
    status->set_mac_address(nic.mac_address);
    status->set_ipv4_address(nic.ipv4_address);
    status->set_ipv6_address(nic.ipv6_address);
    status->set_tap_device(nic.tap_device);
  }
  const bool pid_fits = vm.pid > 0 && vm.pid <= std::numeric_limits<uint32_t>::max();
  out->set_process_id(pid_fits ? static_cast<uint32_t>(vm.pid) : 0);
  if (vm.booted_unix_ns != 0) TimestampFromUnixNs(vm.booted_unix_ns, out->mutable_booted_at());
  out->set_incarnation(vm.incarnation > 0 ? static_cast<uint64_t>(vm.incarnation) : 0);
}

void VmEventToProto(const service::VmEvent& event, v1::VmEvent* out) {
  out->Clear();
  out->set_cursor(CursorToProto(event.seq));
  out->set_vm_id(event.vm_id);
  out->set_from_state(event.from ? VmStateToProto(*event.from) : v1::VM_STATE_UNSPECIFIED);
  out->set_to_state(VmStateToProto(event.to));
  out->set_reason(ReasonToProto(event.reason));
  TimestampFromUnixNs(event.at_unix_ns, out->mutable_time());
  out->set_message(event.message);
}

}  // namespace metald::api::internal

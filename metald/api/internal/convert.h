#pragma once
// Private to metald/api: proto (metald.v1) <-> model / service conversions and the input checks
// that only make sense at the proto boundary (field names the proto has and the model does not).
// Every error names the proto field path the client sent ("network[0].ipv4_gateway").
//
// Thread-safety: pure functions.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "metald/base/status.h"
#include "metald/model/backend_kind.h"
#include "metald/model/vm_spec.h"
#include "metald/model/vm_state.h"
#include "metald/service/requests.h"
#include "metald/v1/vm.pb.h"

namespace metald::api::internal {

// Bounds on request timeouts (ShutdownVm, WaitVm).
inline constexpr std::chrono::milliseconds kMaxTimeout = std::chrono::minutes(10);
inline constexpr std::chrono::milliseconds kDefaultShutdownTimeout = std::chrono::seconds(30);
inline constexpr std::chrono::milliseconds kDefaultWaitTimeout = std::chrono::seconds(60);
// ListVms page sizes above this are lowered to it.
inline constexpr uint32_t kMaxPageSize = 1000;

// VmConfig -> VmSpec. An absent cpu / memory message keeps the model default; a present one is
// copied verbatim (the service validates ranges). Errors (invalid_argument): both ipv4_gateway
// and ipv6_gateway set; an IPv6 address in ipv4_gateway or an IPv4 one in ipv6_gateway;
// ops_per_sec non-zero in a rate limit (not supported by the model).
base::Result<model::VmSpec> VmSpecFromProto(const v1::VmConfig& config);
// VmSpec -> VmConfig (`out` is overwritten). The gateway goes to ipv6_gateway when it contains
// ':', else to ipv4_gateway, so VmSpecFromProto(VmSpecToProto(s)) == s for any valid spec.
void VmSpecToProto(const model::VmSpec& spec, v1::VmConfig* out);

// Rewrites model field paths in a service error message into the proto paths the client sent:
// storage[i].root -> storage[i].is_root, network[i].gateway -> network[i].ipv4_gateway (or
// ipv6_gateway when `sent` set that one), network[i].{rx,tx}_bytes_per_sec ->
// network[i].{rx,tx}_rate_limit.bandwidth_bytes_per_sec. Other text is unchanged.
std::string RewriteSpecFieldPaths(std::string_view message, const v1::VmConfig& sent);

// Proto enum value (as carried on the wire, possibly unknown) -> model state. invalid_argument
// naming `field` for UNSPECIFIED or an unknown value.
base::Result<model::VmState> VmStateFromProto(int value, std::string_view field);
v1::VmState VmStateToProto(model::VmState state);
v1::TransitionReason ReasonToProto(model::TransitionReason reason);
v1::BackendKind BackendToProto(model::BackendKind kind);

// Nanoseconds since the Unix epoch -> Timestamp (nanos always in [0, 1e9), also for negatives).
void TimestampFromUnixNs(int64_t unix_ns, google::protobuf::Timestamp* out);

// A request timeout: nullptr or zero -> `default_value`; otherwise positive, at most kMaxTimeout,
// rounded up to whole milliseconds. invalid_argument naming `field` for a negative, too long or
// malformed (nanos out of range or of another sign than seconds) duration.
base::Result<std::chrono::milliseconds> TimeoutFromProto(const google::protobuf::Duration* duration,
                                                         std::chrono::milliseconds default_value,
                                                         std::string_view field);

// OK for a well-formed VM id. Empty: invalid_argument "vm_id is required". Malformed: not_found
// "VM <id> not found", the same answer as a VM that does not exist (ids are opaque to clients).
base::Status CheckVmId(std::string_view vm_id);

// WatchVmEvents cursor: empty -> nullopt (only new events); the decimal sequence number of an
// event otherwise. invalid_argument naming "cursor" for anything else.
base::Result<std::optional<int64_t>> CursorFromProto(std::string_view cursor);
std::string CursorToProto(int64_t seq);

// ListVms page size: 0 stays 0 (the service's default), above kMaxPageSize is lowered to it.
int PageSizeFromProto(uint32_t page_size);

void VmToProto(const service::Vm& vm, v1::VmInfo* out);
void VmEventToProto(const service::VmEvent& event, v1::VmEvent* out);

}  // namespace metald::api::internal

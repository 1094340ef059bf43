#pragma once
// metalctl's pure helpers: parsing of flag values (memory sizes, durations, disk specs, state
// names, metadata pairs) and the table output. No I/O. Thread-safety: pure functions.
//
// cli/ is a client of the public API (style.md layer 6): it may use base/, rpc/ and the generated
// metald/v1 proto code only.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "metald/base/status.h"
#include "metald/v1/vm.pb.h"

namespace metald::cli {

// "256M", "1G", "1GiB", "512MB", "4096K", "2T" → bytes. Suffixes are binary (K = 1024) and case
// insensitive; "B", "iB" after the letter are accepted. A bare number is MiB, like qemu's -m
// ("512" = 512 MiB); a plain byte count is written with a "B" suffix ("1048576B").
// invalid_argument for anything else, zero, or an overflow.
base::Result<uint64_t> ParseMemorySize(std::string_view text);

// "1.5 GiB", "256 MiB", "512 KiB", "100 B": the largest binary unit that keeps the value >= 1.
std::string FormatBytes(uint64_t bytes);

// "30s", "500ms", "5m", "1h", "1m30s"; a bare number is seconds. invalid_argument otherwise.
base::Result<std::chrono::milliseconds> ParseDuration(std::string_view text);

// "PATH[:ro][:root]" (options in any order, each at most once) → a StorageDevice with the given
// id. The path may not be empty. invalid_argument naming the bad option otherwise.
base::Result<v1::StorageDevice> ParseDiskSpec(std::string_view spec, std::string id);

// "RUNNING", "running", "shutting-down", "shutting_down", "VM_STATE_RUNNING" → the state.
// invalid_argument listing the valid names otherwise (UNSPECIFIED is not a valid name).
base::Result<v1::VmState> ParseStateName(std::string_view name);
// VM_STATE_RUNNING → "RUNNING"; an unknown number → its decimal value.
std::string StateName(v1::VmState state);
// TRANSITION_REASON_USER_REQUEST → "user_request".
std::string ReasonName(v1::TransitionReason reason);

// "key=value" → the pair; the key may not be empty (the value may).
base::Result<std::pair<std::string, std::string>> ParseMetadata(std::string_view text);

// Column-aligned text: `header` then `rows`, cells separated by at least two spaces, no trailing
// spaces, every line ending in '\n'. Rows shorter than the header are padded with empty cells.
std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows);

// The list table: ID, STATE, VCPUS, MEMORY, IPV4, CREATED.
std::string FormatVmList(const std::vector<v1::VmInfo>& vms);
// `get`: one "FIELD  value" line per field that is set (id, customer, state, reason, message,
// backend, vcpus, memory, kernel, initrd, kernel args, disks, network, pid, incarnation,
// created, updated, booted, metadata).
std::string FormatVmDetail(const v1::VmInfo& vm);
// `watch`: "<time> <vm_id> <FROM> -> <TO> (<reason>) [message] cursor=<cursor>".
std::string FormatEvent(const v1::VmEvent& event);

}  // namespace metald::cli

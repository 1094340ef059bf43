#pragma once
// VmSpec: the domain form of the API's VmConfig, and its validation.
//
// Field paths in error messages are the member paths of VmSpec ("cpu.vcpu_count",
// "storage[1].path", "network[0].mac_address"); api/ keeps its proto field names equal to these so
// that a message names the field the client sent.
//
// Thread-safety: plain values and pure functions.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "metald/base/status.h"

namespace metald::model {

struct CpuSpec {
  uint32_t vcpu_count = 1;
  friend bool operator==(const CpuSpec&, const CpuSpec&) = default;
};

struct MemorySpec {
  uint64_t size_bytes = 128ull << 20;
  friend bool operator==(const MemorySpec&, const MemorySpec&) = default;
};

struct BootSpec {
  std::string kernel_path;  // Required; resolved under the image roots by the service.
  std::string initrd_path;  // Optional.
  std::string kernel_args;  // Optional; appended to the backend's own arguments.
  friend bool operator==(const BootSpec&, const BootSpec&) = default;
};

struct StorageSpec {
  std::string id;  // [A-Za-z0-9_-]{1,64}, unique within the VM.
  std::string path;
  bool read_only = false;
  bool root = false;  // At most one drive is the root device.
  friend bool operator==(const StorageSpec&, const StorageSpec&) = default;
};

struct NetworkSpec {
  std::string id;                 // [A-Za-z0-9_-]{1,64}, unique within the VM.
  std::string mac_address;        // "02:00:00:00:00:01"; empty = the service assigns one.
  std::string ipv4_address;       // CIDR "10.1.2.3/24"; empty = none.
  std::string ipv6_address;       // CIDR "fd00::3/64"; empty = none.
  std::string gateway;            // IPv4 or IPv6 address; empty = none.
  uint64_t rx_bytes_per_sec = 0;  // Receive rate limit; 0 = unlimited.
  uint64_t tx_bytes_per_sec = 0;  // Transmit rate limit; 0 = unlimited.
  friend bool operator==(const NetworkSpec&, const NetworkSpec&) = default;
};

struct ConsoleSpec {
  bool enabled = false;
  std::string log_file;  // Optional; where the serial console is written.
  friend bool operator==(const ConsoleSpec&, const ConsoleSpec&) = default;
};

struct VmSpec {
  CpuSpec cpu;
  MemorySpec memory;
  BootSpec boot;
  std::vector<StorageSpec> storage;
  std::vector<NetworkSpec> network;
  ConsoleSpec console;
  std::map<std::string, std::string> metadata;
  friend bool operator==(const VmSpec&, const VmSpec&) = default;
};

// Bounds ValidateSpec enforces. The daemon fills this from its configuration.
struct SpecLimits {
  uint32_t max_vcpus = 32;                    // Default: 32.
  uint64_t min_memory_bytes = 16ull << 20;    // Default: 16 MiB.
  uint64_t max_memory_bytes = 64ull << 30;    // Default: 64 GiB.
  uint64_t memory_alignment_bytes = 1 << 20;  // Memory must be a multiple. Default: 1 MiB.
  size_t max_storage_devices = 16;            // Default: 16.
  size_t max_network_interfaces = 8;          // Default: 8.
  size_t max_path_length = 4096;              // Bytes per path field. Default: 4096.
  size_t max_kernel_args_length = 2048;       // Bytes. Default: 2048.
  size_t max_metadata_entries = 64;           // Default: 64.
  size_t max_metadata_key_length = 128;       // Bytes. Default: 128.
  size_t max_metadata_value_length = 1024;    // Bytes. Default: 1024.
};

// OK when `spec` is well formed and inside `limits`; otherwise invalid_argument naming the first
// bad field, e.g. "cpu.vcpu_count must be between 1 and 32". Does not touch the file system:
// paths are checked for shape only (non-empty, no NUL); confinement to the image roots is
// ResolveUnderRoots / ResolveExistingUnderRoots (path_policy.h).
base::Status ValidateSpec(const VmSpec& spec, const SpecLimits& limits);

// Shape checks ValidateSpec uses, exposed for reuse and tests.
// "02:00:00:00:00:01" (either case): six hex octets, unicast (low bit of the first octet clear),
// not all zero.
bool IsValidMac(std::string_view mac);
// "a.b.c.d/n" with n in 0..32, no leading zeros in octets.
bool IsValidIpv4Cidr(std::string_view cidr);
// An IPv6 address (inet_pton syntax) + "/n" with n in 0..128.
bool IsValidIpv6Cidr(std::string_view cidr);
// A bare IPv4 or IPv6 address.
bool IsValidIpAddress(std::string_view address);

}  // namespace metald::model

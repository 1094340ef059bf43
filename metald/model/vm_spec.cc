#include "metald/model/vm_spec.h"

#include <arpa/inet.h>

#include <cctype>
#include <charconv>
#include <optional>
#include <set>
#include <string>

namespace metald::model {
namespace {

base::Status Invalid(std::string_view field, std::string_view what) {
  std::string msg(field);
  msg += ' ';
  msg += what;
  return base::InvalidArgumentError(std::move(msg));
}

std::string Indexed(std::string_view list, size_t i, std::string_view member) {
  std::string s(list);
  s += '[';
  s += std::to_string(i);
  s += "].";
  s += member;
  return s;
}

bool IsIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

bool IsValidDeviceId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!IsIdChar(c)) return false;
  }
  return true;
}

bool HasControlChar(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<uint32_t> ParseIpv4(std::string_view s) {
  uint32_t addr = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (s.empty() || s[0] != '.') return std::nullopt;
      s.remove_prefix(1);
    }
    size_t n = 0;
    while (n < s.size() && n < 4 && s[n] >= '0' && s[n] <= '9') ++n;
    if (n == 0 || n > 3 || (n > 1 && s[0] == '0')) return std::nullopt;
    unsigned v = 0;
    std::from_chars(s.data(), s.data() + n, v);
    if (v > 255) return std::nullopt;
    addr = (addr << 8) | v;
    s.remove_prefix(n);
  }
  if (!s.empty()) return std::nullopt;
  return addr;
}

// Parses "/n" suffix; returns the prefix length if it is in [0, max].
std::optional<int> ParsePrefix(std::string_view s, int max) {
  if (s.empty() || s.size() > 3) return std::nullopt;
  if (s.size() > 1 && s[0] == '0') return std::nullopt;
  int v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v < 0 || v > max) return std::nullopt;
  return v;
}

bool IsIpv6(std::string_view s) {
  if (s.empty() || s.size() >= INET6_ADDRSTRLEN) return false;
  std::string z(s);  // inet_pton needs a NUL-terminated string
  unsigned char buf[16];
  return inet_pton(AF_INET6, z.c_str(), buf) == 1;
}

base::Status CheckPath(std::string_view field, const std::string& path, bool required,
                       const SpecLimits& limits) {
  if (path.empty()) {
    return required ? Invalid(field, "is required") : base::OkStatus();
  }
  if (path.size() > limits.max_path_length) {
    return Invalid(field, "must be at most " + std::to_string(limits.max_path_length) + " bytes");
  }
  if (HasControlChar(path)) return Invalid(field, "must not contain control characters");
  return base::OkStatus();
}

base::Status CheckNetwork(const NetworkSpec& n, size_t i) {
  if (!IsValidDeviceId(n.id)) {
    return Invalid(Indexed("network", i, "id"),
                   "must be 1 to 64 characters of letters, digits, '_' or '-'");
  }
  if (!n.mac_address.empty() && !IsValidMac(n.mac_address)) {
    return Invalid(Indexed("network", i, "mac_address"),
                   "must be a unicast MAC address like 02:00:00:00:00:01");
  }
  std::optional<uint32_t> v4_addr;
  int v4_prefix = 0;
  if (!n.ipv4_address.empty()) {
    if (!IsValidIpv4Cidr(n.ipv4_address)) {
      return Invalid(Indexed("network", i, "ipv4_address"),
                     "must be an IPv4 address with prefix length like 10.0.0.2/24");
    }
    size_t slash = n.ipv4_address.find('/');
    v4_addr = ParseIpv4(std::string_view(n.ipv4_address).substr(0, slash));
    v4_prefix = *ParsePrefix(std::string_view(n.ipv4_address).substr(slash + 1), 32);
  }
  if (!n.ipv6_address.empty() && !IsValidIpv6Cidr(n.ipv6_address)) {
    return Invalid(Indexed("network", i, "ipv6_address"),
                   "must be an IPv6 address with prefix length like fd00::2/64");
  }
  if (!n.gateway.empty()) {
    const std::string field = Indexed("network", i, "gateway");
    if (auto gw = ParseIpv4(n.gateway)) {
      if (!v4_addr) return Invalid(field, "is an IPv4 address but ipv4_address is not set");
      const uint32_t mask = v4_prefix == 0 ? 0 : ~uint32_t{0} << (32 - v4_prefix);
      if ((*gw & mask) != (*v4_addr & mask)) {
        return Invalid(field, "must be inside the subnet of ipv4_address");
      }
      if (*gw == *v4_addr) return Invalid(field, "must differ from ipv4_address");
    } else if (IsIpv6(n.gateway)) {
      if (n.ipv6_address.empty()) {
        return Invalid(field, "is an IPv6 address but ipv6_address is not set");
      }
    } else {
      return Invalid(field, "must be an IPv4 or IPv6 address");
    }
  }
  return base::OkStatus();
}

}  // namespace

bool IsValidMac(std::string_view mac) {
  if (mac.size() != 17) return false;
  int octets[6];
  for (int i = 0; i < 6; ++i) {
    const size_t at = static_cast<size_t>(i) * 3;
    if (i > 0 && mac[at - 1] != ':') return false;
    const int hi = HexValue(mac[at]);
    const int lo = HexValue(mac[at + 1]);
    if (hi < 0 || lo < 0) return false;
    octets[i] = hi * 16 + lo;
  }
  if (octets[0] & 1) return false;  // multicast / broadcast
  for (int o : octets) {
    if (o != 0) return true;
  }
  return false;  // all zero
}

bool IsValidIpv4Cidr(std::string_view cidr) {
  const size_t slash = cidr.find('/');
  if (slash == std::string_view::npos) return false;
  return ParseIpv4(cidr.substr(0, slash)).has_value() &&
         ParsePrefix(cidr.substr(slash + 1), 32).has_value();
}

bool IsValidIpv6Cidr(std::string_view cidr) {
  const size_t slash = cidr.find('/');
  if (slash == std::string_view::npos) return false;
  return IsIpv6(cidr.substr(0, slash)) && ParsePrefix(cidr.substr(slash + 1), 128).has_value();
}

bool IsValidIpAddress(std::string_view address) {
  return ParseIpv4(address).has_value() || IsIpv6(address);
}

base::Status ValidateSpec(const VmSpec& spec, const SpecLimits& limits) {
  if (spec.cpu.vcpu_count < 1 || spec.cpu.vcpu_count > limits.max_vcpus) {
    return Invalid("cpu.vcpu_count", "must be between 1 and " + std::to_string(limits.max_vcpus));
  }
  if (spec.memory.size_bytes < limits.min_memory_bytes ||
      spec.memory.size_bytes > limits.max_memory_bytes) {
    return Invalid("memory.size_bytes", "must be between " +
                                            std::to_string(limits.min_memory_bytes) + " and " +
                                            std::to_string(limits.max_memory_bytes));
  }
  if (limits.memory_alignment_bytes > 1 &&
      spec.memory.size_bytes % limits.memory_alignment_bytes != 0) {
    return Invalid("memory.size_bytes",
                   "must be a multiple of " + std::to_string(limits.memory_alignment_bytes));
  }

  RETURN_IF_ERROR(CheckPath("boot.kernel_path", spec.boot.kernel_path, true, limits));
  RETURN_IF_ERROR(CheckPath("boot.initrd_path", spec.boot.initrd_path, false, limits));
  if (spec.boot.kernel_args.size() > limits.max_kernel_args_length) {
    return Invalid("boot.kernel_args",
                   "must be at most " + std::to_string(limits.max_kernel_args_length) + " bytes");
  }
  if (HasControlChar(spec.boot.kernel_args)) {
    return Invalid("boot.kernel_args", "must not contain control characters");
  }

  if (spec.storage.size() > limits.max_storage_devices) {
    return Invalid("storage",
                   "must have at most " + std::to_string(limits.max_storage_devices) + " devices");
  }
  std::set<std::string_view> storage_ids;
  bool have_root = false;
  for (size_t i = 0; i < spec.storage.size(); ++i) {
    const StorageSpec& s = spec.storage[i];
    if (!IsValidDeviceId(s.id)) {
      return Invalid(Indexed("storage", i, "id"),
                     "must be 1 to 64 characters of letters, digits, '_' or '-'");
    }
    if (!storage_ids.insert(s.id).second) {
      return Invalid(Indexed("storage", i, "id"), "duplicates \"" + s.id + "\"");
    }
    RETURN_IF_ERROR(CheckPath(Indexed("storage", i, "path"), s.path, true, limits));
    if (s.root) {
      if (have_root)
        return Invalid(Indexed("storage", i, "root"), "is set on more than one device");
      have_root = true;
    }
  }

  if (spec.network.size() > limits.max_network_interfaces) {
    return Invalid("network", "must have at most " + std::to_string(limits.max_network_interfaces) +
                                  " interfaces");
  }
  std::set<std::string_view> net_ids;
  std::set<std::string> macs;
  for (size_t i = 0; i < spec.network.size(); ++i) {
    const NetworkSpec& n = spec.network[i];
    RETURN_IF_ERROR(CheckNetwork(n, i));
    if (!net_ids.insert(n.id).second) {
      return Invalid(Indexed("network", i, "id"), "duplicates \"" + n.id + "\"");
    }
    if (!n.mac_address.empty()) {
      std::string lower = n.mac_address;
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (!macs.insert(lower).second) {
        return Invalid(Indexed("network", i, "mac_address"), "duplicates another interface's");
      }
    }
  }

  if (spec.console.enabled || !spec.console.log_file.empty()) {
    RETURN_IF_ERROR(CheckPath("console.log_file", spec.console.log_file, false, limits));
  }

  if (spec.metadata.size() > limits.max_metadata_entries) {
    return Invalid("metadata",
                   "must have at most " + std::to_string(limits.max_metadata_entries) + " entries");
  }
  for (const auto& [key, value] : spec.metadata) {
    if (key.empty() || key.size() > limits.max_metadata_key_length) {
      return Invalid("metadata", "keys must be 1 to " +
                                     std::to_string(limits.max_metadata_key_length) + " bytes");
    }
    if (HasControlChar(key)) return Invalid("metadata", "keys must not contain control characters");
    if (value.size() > limits.max_metadata_value_length) {
      return Invalid(
          "metadata[" + key + "]",
          "must be at most " + std::to_string(limits.max_metadata_value_length) + " bytes");
    }
  }
  return base::OkStatus();
}

}  // namespace metald::model

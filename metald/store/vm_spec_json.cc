#include "metald/store/vm_spec_json.h"

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace metald::store {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// Reads `key` of object `obj` into `out` when present; throws json::type_error on a wrong type.
template <typename T>
void Get(const json& obj, const char* key, T& out) {
  auto it = obj.find(key);
  if (it != obj.end() && !it->is_null()) it->get_to(out);
}

const json& Member(const json& obj, const char* key) {
  static const json* kEmpty = new json(json::object());
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return *kEmpty;
  if (!it->is_object()) throw std::invalid_argument(std::string(key) + " must be an object");
  return *it;
}

}  // namespace

std::string VmSpecToJson(const model::VmSpec& spec) {
  ordered_json j;
  j["cpu"] = {{"vcpu_count", spec.cpu.vcpu_count}};
  j["memory"] = {{"size_bytes", spec.memory.size_bytes}};
  j["boot"] = {{"kernel_path", spec.boot.kernel_path},
               {"initrd_path", spec.boot.initrd_path},
               {"kernel_args", spec.boot.kernel_args}};
  ordered_json storage = ordered_json::array();
  for (const auto& s : spec.storage) {
    storage.push_back(
        {{"id", s.id}, {"path", s.path}, {"read_only", s.read_only}, {"root", s.root}});
  }
  j["storage"] = std::move(storage);
  ordered_json network = ordered_json::array();
  for (const auto& n : spec.network) {
    network.push_back({{"id", n.id},
                       {"mac_address", n.mac_address},
                       {"ipv4_address", n.ipv4_address},
                       {"ipv6_address", n.ipv6_address},
                       {"gateway", n.gateway},
                       {"rx_bytes_per_sec", n.rx_bytes_per_sec},
                       {"tx_bytes_per_sec", n.tx_bytes_per_sec}});
  }
  j["network"] = std::move(network);
  j["console"] = {{"enabled", spec.console.enabled}, {"log_file", spec.console.log_file}};
  ordered_json metadata = ordered_json::object();
  for (const auto& [k, v] : spec.metadata) metadata[k] = v;  // std::map: sorted keys
  j["metadata"] = std::move(metadata);
  return j.dump();
}

base::Result<model::VmSpec> VmSpecFromJson(std::string_view text) {
  try {
    const json j = json::parse(text);
    if (!j.is_object()) return base::InvalidArgumentError("VM spec JSON must be an object");
    model::VmSpec spec;
    Get(Member(j, "cpu"), "vcpu_count", spec.cpu.vcpu_count);
    Get(Member(j, "memory"), "size_bytes", spec.memory.size_bytes);
    const json& boot = Member(j, "boot");
    Get(boot, "kernel_path", spec.boot.kernel_path);
    Get(boot, "initrd_path", spec.boot.initrd_path);
    Get(boot, "kernel_args", spec.boot.kernel_args);
    if (auto it = j.find("storage"); it != j.end() && !it->is_null()) {
      for (const json& e : it->get_ref<const json::array_t&>()) {
        if (!e.is_object()) throw std::invalid_argument("storage entries must be objects");
        model::StorageSpec s;
        Get(e, "id", s.id);
        Get(e, "path", s.path);
        Get(e, "read_only", s.read_only);
        Get(e, "root", s.root);
        spec.storage.push_back(std::move(s));
      }
    }
    if (auto it = j.find("network"); it != j.end() && !it->is_null()) {
      for (const json& e : it->get_ref<const json::array_t&>()) {
        if (!e.is_object()) throw std::invalid_argument("network entries must be objects");
        model::NetworkSpec n;
        Get(e, "id", n.id);
        Get(e, "mac_address", n.mac_address);
        Get(e, "ipv4_address", n.ipv4_address);
        Get(e, "ipv6_address", n.ipv6_address);
        Get(e, "gateway", n.gateway);
        Get(e, "rx_bytes_per_sec", n.rx_bytes_per_sec);
        Get(e, "tx_bytes_per_sec", n.tx_bytes_per_sec);
        spec.network.push_back(std::move(n));
      }
    }
    const json& console = Member(j, "console");
    Get(console, "enabled", spec.console.enabled);
    Get(console, "log_file", spec.console.log_file);
    Get(j, "metadata", spec.metadata);
    return spec;
  } catch (const std::exception& e) {
    // nlohmann's parse_error / type_error and our own invalid_argument end here.
    return base::InvalidArgumentError(std::string("Malformed VM spec JSON: ") + e.what());
  }
}

}  // namespace metald::store

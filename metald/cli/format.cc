#include "metald/cli/format.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <limits>
#include <map>

namespace metald::cli {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string Upper(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return out;
}

// Leading decimal digits of `s` as a number; `*rest` gets what follows. False when there are no
// digits or the number overflows.
bool LeadingNumber(std::string_view s, uint64_t* value, std::string_view* rest) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *value);
  if (ec != std::errc() || ptr == s.data()) return false;
  *rest = s.substr(static_cast<size_t>(ptr - s.data()));
  return true;
}

std::string FormatTime(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "-";
  google::protobuf::Timestamp whole = ts;
  whole.set_nanos(0);  // Seconds are precise enough for a table.
  return google::protobuf::util::TimeUtil::ToString(whole);
}

}  // namespace

base::Result<uint64_t> ParseMemorySize(std::string_view text) {
  auto bad = [&] {
    return base::InvalidArgumentError("Bad memory size '" + std::string(text) +
                                      "' (want e.g. 512M, 1G, 2GiB; a bare number is MiB)");
  };
  uint64_t n = 0;
  std::string_view rest;
  if (!LeadingNumber(text, &n, &rest) || n == 0) return bad();
  std::string unit = Lower(rest);
  int shift = 0;
  if (unit.empty()) {
    shift = 20;
  } else if (unit == "b") {
    shift = 0;
  } else {
    static const std::map<char, int> kShifts = {{'k', 10}, {'m', 20}, {'g', 30}, {'t', 40}};
    auto it = kShifts.find(unit[0]);
    std::string tail = unit.substr(1);
    if (it == kShifts.end() || !(tail.empty() || tail == "b" || tail == "ib")) return bad();
    shift = it->second;
  }
  if (shift > 0 && n > (std::numeric_limits<uint64_t>::max() >> shift)) return bad();
  return n << shift;
}

std::string FormatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  double value = static_cast<double>(bytes);
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  if (unit == 0 || value == static_cast<double>(static_cast<uint64_t>(value))) {
    std::snprintf(buf, sizeof buf, "%llu %s", static_cast<unsigned long long>(value), kUnits[unit]);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", value, kUnits[unit]);
  }
  return buf;
}

base::Result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  auto bad = [&] {
    return base::InvalidArgumentError("Bad duration '" + std::string(text) +
                                      "' (want e.g. 30s, 500ms, 5m, 1h; a bare number is seconds)");
  };
  if (text.empty()) return bad();
  std::chrono::milliseconds total{0};
  std::string_view s = text;
  bool bare = true;
  while (!s.empty()) {
    uint64_t n = 0;
    std::string_view rest;
    if (!LeadingNumber(s, &n, &rest)) return bad();
    if (n > 1'000'000'000ull) return bad();
    size_t unit_len = 0;
    while (unit_len < rest.size() && std::isalpha(static_cast<unsigned char>(rest[unit_len]))) {
      ++unit_len;
    }
    std::string unit(rest.substr(0, unit_len));
    int64_t v = static_cast<int64_t>(n);
    if (unit.empty()) {
      if (!bare || unit_len != rest.size()) return bad();
      return std::chrono::milliseconds(std::chrono::seconds(v));
    } else if (unit == "ms") {
      total += std::chrono::milliseconds(v);
    } else if (unit == "s") {
      total += std::chrono::seconds(v);
    } else if (unit == "m") {
      total += std::chrono::minutes(v);
    } else if (unit == "h") {
      total += std::chrono::hours(v);
    } else {
      return bad();
    }
    bare = false;
    s = rest.substr(unit_len);
  }
  return total;
}

base::Result<v1::StorageDevice> ParseDiskSpec(std::string_view spec, std::string id) {
  v1::StorageDevice disk;
  disk.set_id(std::move(id));
  // Options are peeled off the end so that a path may itself contain ':'.
  std::string_view path = spec;
  bool ro = false;
  bool root = false;
  while (true) {
    size_t colon = path.rfind(':');
    if (colon == std::string_view::npos) break;
    std::string_view opt = path.substr(colon + 1);
    if (opt == "ro" && !ro) {
      ro = true;
    } else if (opt == "root" && !root) {
      root = true;
    } else if (opt == "ro" || opt == "root") {
      return base::InvalidArgumentError("--disk " + std::string(spec) + ": option '" +
                                        std::string(opt) + "' given twice");
    } else if (opt.find('/') == std::string_view::npos) {
      return base::InvalidArgumentError("--disk " + std::string(spec) + ": unknown option '" +
                                        std::string(opt) + "' (want PATH[:ro][:root])");
    } else {
      break;
    }
    path = path.substr(0, colon);
  }
  if (path.empty()) {
    return base::InvalidArgumentError("--disk " + std::string(spec) +
                                      ": empty path (want PATH[:ro][:root])");
  }
  disk.set_path(std::string(path));
  disk.set_read_only(ro);
  disk.set_is_root(root);
  return disk;
}

base::Result<v1::VmState> ParseStateName(std::string_view name) {
  std::string upper = Upper(name);
  std::replace(upper.begin(), upper.end(), '-', '_');
  if (!upper.starts_with("VM_STATE_")) upper = "VM_STATE_" + upper;
  v1::VmState state;
  if (upper != "VM_STATE_UNSPECIFIED" && v1::VmState_Parse(upper, &state)) return state;
  std::string valid;
  const google::protobuf::EnumDescriptor* d = v1::VmState_descriptor();
  for (int i = 0; i < d->value_count(); ++i) {
    if (d->value(i)->number() == 0) continue;
    if (!valid.empty()) valid += ", ";
    valid += StateName(static_cast<v1::VmState>(d->value(i)->number()));
  }
  return base::InvalidArgumentError("Unknown state '" + std::string(name) + "' (want one of " +
                                    valid + ")");
}

std::string StateName(v1::VmState state) {
  const std::string& full = v1::VmState_Name(state);
  if (full.empty()) return std::to_string(static_cast<int>(state));
  return full.substr(std::string_view("VM_STATE_").size());
}

std::string ReasonName(v1::TransitionReason reason) {
  const std::string& full = v1::TransitionReason_Name(reason);
  if (full.empty()) return std::to_string(static_cast<int>(reason));
  return Lower(full.substr(std::string_view("TRANSITION_REASON_").size()));
}

base::Result<std::pair<std::string, std::string>> ParseMetadata(std::string_view text) {
  size_t eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return base::InvalidArgumentError("--metadata " + std::string(text) + ": want KEY=VALUE");
  }
  return std::make_pair(std::string(text.substr(0, eq)), std::string(text.substr(eq + 1)));
}

std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size(); ++i) {
      if (i >= width.size()) width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  };
  measure(header);
  for (const auto& row : rows) measure(row);
  auto line = [&](const std::vector<std::string>& row) {
    std::string out;
    for (size_t i = 0; i < width.size(); ++i) {
      const std::string cell = i < row.size() ? row[i] : "";
      out += cell;
      if (i + 1 < width.size()) out += std::string(width[i] - cell.size() + 2, ' ');
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(header);
  for (const auto& row : rows) out += line(row);
  return out;
}

std::string FormatVmList(const std::vector<v1::VmInfo>& vms) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::VmInfo& vm : vms) {
    std::string ipv4 = "-";
    if (vm.network_size() > 0 && !vm.network(0).ipv4_address().empty()) {
      ipv4 = vm.network(0).ipv4_address();
    }
    rows.push_back(
        {vm.vm_id(), StateName(vm.state()), std::to_string(vm.config().cpu().vcpu_count()),
         FormatBytes(vm.config().memory().size_bytes()), ipv4, FormatTime(vm.created_at())});
  }
  return FormatTable({"ID", "STATE", "VCPUS", "MEMORY", "IPV4", "CREATED"}, rows);
}

std::string FormatVmDetail(const v1::VmInfo& vm) {
  std::vector<std::vector<std::string>> rows;
  auto add = [&](std::string key, std::string value) {
    if (!value.empty()) rows.push_back({std::move(key), std::move(value)});
  };
  add("ID", vm.vm_id());
  add("CUSTOMER", vm.customer_id());
  add("STATE", StateName(vm.state()));
  add("REASON", ReasonName(vm.state_reason()));
  add("MESSAGE", vm.state_message());
  std::string backend = v1::BackendKind_Name(vm.backend());
  if (backend.starts_with("BACKEND_KIND_")) backend = Lower(backend.substr(13));
  add("BACKEND", backend);
  const v1::VmConfig& c = vm.config();
  add("VCPUS", std::to_string(c.cpu().vcpu_count()));
  add("MEMORY", FormatBytes(c.memory().size_bytes()));
  add("KERNEL", c.boot().kernel_path());
  add("INITRD", c.boot().initrd_path());
  add("KERNEL ARGS", c.boot().kernel_args());
  for (const v1::StorageDevice& d : c.storage()) {
    std::string value = d.id() + " " + d.path();
    if (d.read_only()) value += " ro";
    if (d.is_root()) value += " root";
    add("DISK", value);
  }
  for (const v1::NetworkStatus& n : vm.network()) {
    std::string value = n.id() + " mac=" + n.mac_address();
    if (!n.ipv4_address().empty()) value += " ipv4=" + n.ipv4_address();
    if (!n.ipv6_address().empty()) value += " ipv6=" + n.ipv6_address();
    if (!n.tap_device().empty()) value += " tap=" + n.tap_device();
    add("NETWORK", value);
  }
  if (vm.process_id() != 0) add("PID", std::to_string(vm.process_id()));
  add("INCARNATION", std::to_string(vm.incarnation()));
  add("CREATED", FormatTime(vm.created_at()));
  add("UPDATED", FormatTime(vm.updated_at()));
  if (vm.has_booted_at()) add("BOOTED", FormatTime(vm.booted_at()));
  std::map<std::string, std::string> metadata(c.metadata().begin(), c.metadata().end());
  for (const auto& [k, v] : metadata) add("METADATA", k + "=" + v);
  return FormatTable({"FIELD", "VALUE"}, rows);
}

std::string FormatEvent(const v1::VmEvent& event) {
  std::string from =
      event.from_state() == v1::VM_STATE_UNSPECIFIED ? "-" : StateName(event.from_state());
  std::string out = FormatTime(event.time()) + " " + event.vm_id() + " " + from + " -> " +
                    StateName(event.to_state()) + " (" + ReasonName(event.reason()) + ")";
  if (!event.message().empty()) out += " " + event.message();
  out += " cursor=" + event.cursor();
  return out;
}

}  // namespace metald::cli

#include "metald/net/network.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "metald/net/address.h"
#include "metald/net/internal/rules.h"

namespace metald::net {
namespace {

using internal::VmNames;

bool ValidPrefix(std::string_view p) {
  if (p.empty() || p.size() > 4 || p[0] < 'a' || p[0] > 'z') return false;
  return std::all_of(p.begin(), p.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); });
}

bool IsHexKey(std::string_view s) {
  return s.size() == kNameKeyLength && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// One reversible step of Setup. `undo` must succeed whether `run` did nothing, part or all of its
// work; an empty undo means an earlier step's undo removes this step's objects.
struct Step {
  std::string name;
  std::function<base::Status()> run;
  std::function<base::Status()> undo;
  // The step changes nothing when it fails, so its own undo is skipped on failure. Only the lease
  // step (one SQLite transaction) is: undoing a failed allocation would release the lease of a VM
  // that already had one. An nft transaction is atomic too, but its reply can be lost after the
  // commit, so the filter step is undone like the others.
  bool atomic_on_failure = false;
};

Command Ip(std::vector<std::string> args) {
  args.insert(args.begin(), "ip");
  return Command{std::move(args), ""};
}

}  // namespace

std::string VmNetwork::KernelCmdlineFragment() const {
  std::string s = "metald.net=" + ipv4 + "/" + std::to_string(ipv4_prefix_len);
  if (!ipv4_gateway.empty()) s += "," + ipv4_gateway;
  return s;
}

std::string NetworkInventory::ToString() const {
  std::string s;
  auto add = [&](std::string_view kind, const std::vector<std::string>& v) {
    for (const std::string& x : v) s += std::string(kind) + " " + x + "\n";
  };
  add("netns", namespaces);
  add("link", links);
  add("nft", nft_objects);
  add("lease", leases);
  return s;
}

base::Result<std::unique_ptr<Network>> Network::Open(NetworkOptions options,
                                                     std::unique_ptr<CommandRunner> runner) {
  if (!ValidPrefix(options.name_prefix)) {
    return base::InvalidArgumentError(
        "name_prefix must be 1 to 4 characters of [a-z0-9] starting with a letter, got \"" +
        options.name_prefix + "\"");
  }
  if (options.lease_db_path.empty()) {
    return base::InvalidArgumentError("lease_db_path is required");
  }
  LeaseStoreOptions lease_options;
  lease_options.db_path = options.lease_db_path;
  lease_options.ipv4_cidr = options.ipv4_cidr;
  lease_options.ipv6_prefix = options.ipv6_prefix;
  lease_options.now_unix_ns = options.now_unix_ns;
  ASSIGN_OR_RETURN(std::unique_ptr<LeaseStore> leases, LeaseStore::Open(std::move(lease_options)));
  if (!runner) runner = NewSubprocessRunner();
  std::unique_ptr<Network> network(
      new Network(std::move(options), std::move(runner), std::move(leases)));
  RETURN_IF_ERROR(network->EnsureHost().WithContext("Network host setup"));
  return network;
}

Network::Network(NetworkOptions options, std::unique_ptr<CommandRunner> runner,
                 std::unique_ptr<LeaseStore> leases)
    : options_(std::move(options)),
      bridge_(internal::BridgeName(options_.name_prefix)),
      runner_(std::move(runner)),
      leases_(std::move(leases)) {}

base::Status Network::EnsureHost() {
  ASSIGN_OR_RETURN(CommandResult show, runner_->Run(Ip({"link", "show", "dev", bridge_})));
  if (show.exit_code != 0) {
    RETURN_IF_ERROR(
        RunChecked(*runner_, Ip({"link", "add", "name", bridge_, "type", "bridge"})).status());
  }
  RETURN_IF_ERROR(RunChecked(*runner_, Ip({"link", "set", "dev", bridge_, "up"})).status());
  const Ipv4Cidr& pool = leases_->ipv4_pool();
  RETURN_IF_ERROR(
      RunChecked(*runner_, Ip({"addr", "replace",
                               leases_->ipv4_gateway() + "/" + std::to_string(pool.prefix_len),
                               "dev", bridge_}))
          .status());
  if (const auto& v6 = leases_->ipv6_prefix()) {
    RETURN_IF_ERROR(RunChecked(*runner_, Ip({"-6", "addr", "replace",
                                             v6->AddressAt(Ipv4Cidr::kGatewayIndex) + "/" +
                                                 std::to_string(v6->prefix_len),
                                             "dev", bridge_, "nodad"}))
                        .status());
  }
  RETURN_IF_ERROR(RunNft(
      internal::HostRulesScript(options_.name_prefix, pool.ToString(), options_.nat_uplink)));
  if (!options_.nat_uplink.empty()) {
    RETURN_IF_ERROR(
        RunChecked(*runner_, Command{{"sysctl", "-q", "-w", "net.ipv4.ip_forward=1"}, ""})
            .status());
  }
  return base::OkStatus();
}

base::Status Network::RunNft(const std::string& script) {
  std::lock_guard<std::mutex> lock(nft_mu_);
  return RunChecked(*runner_, Command{{"nft", "-f", "-"}, script}).status();
}

base::Status Network::DeleteLink(const std::string& name) {
  base::Result<std::string> del = RunChecked(*runner_, Ip({"link", "del", "dev", name}));
  if (del.ok()) return base::OkStatus();
  // Failing because it is already gone is success; anything else is not.
  ASSIGN_OR_RETURN(CommandResult show, runner_->Run(Ip({"link", "show", "dev", name})));
  return show.exit_code != 0 ? base::OkStatus() : del.status();
}

base::Status Network::DeleteNetns(const std::string& name) {
  base::Result<std::string> del = RunChecked(*runner_, Ip({"netns", "del", name}));
  if (del.ok()) return base::OkStatus();
  ASSIGN_OR_RETURN(std::vector<std::string> all, ListNetns());
  return std::find(all.begin(), all.end(), name) == all.end() ? base::OkStatus() : del.status();
}

base::Result<std::vector<std::string>> Network::ListNetns() {
  ASSIGN_OR_RETURN(std::string out, RunChecked(*runner_, Ip({"netns", "list"})));
  std::vector<std::string> names;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    std::string name = line.substr(0, line.find(' '));
    if (!name.empty()) names.push_back(name);
  }
  return names;
}

base::Result<std::vector<std::string>> Network::ListHostLinks() {
  ASSIGN_OR_RETURN(std::string out, RunChecked(*runner_, Ip({"-o", "link", "show"})));
  std::vector<std::string> names;
  std::istringstream in(out);
  std::string line;
  // "12: mtldv0a1b2c3d4e@if11: <BROADCAST,...> ..."
  while (std::getline(in, line)) {
    size_t start = line.find(": ");
    if (start == std::string::npos) continue;
    start += 2;
    size_t end = line.find_first_of(":@", start);
    if (end == std::string::npos) continue;
    names.push_back(line.substr(start, end - start));
  }
  return names;
}

VmNetwork Network::FromLease(const Lease& lease) const {
  VmNames names = internal::NamesFor(options_.name_prefix, lease.name_key);
  VmNetwork n;
  n.vm_id = lease.vm_id;
  n.customer_id = lease.customer_id;
  n.netns_name = names.netns;
  n.netns_path = names.netns_path;
  n.tap_name = std::string(internal::kTapName);
  n.host_veth = names.host_veth;
  n.mac = DeriveMac(lease.vm_id);
  n.ipv4 = lease.ipv4;
  n.ipv4_prefix_len = lease.ipv4_prefix_len;
  // The gateway of the pool the lease came from (host index 1).
  if (auto pool = ParseIpv4Cidr(lease.pool); pool.ok()) {
    n.ipv4_gateway = FormatIpv4(pool->At(Ipv4Cidr::kGatewayIndex));
  }
  if (!lease.ipv6.empty() && leases_->ipv6_prefix()) {
    n.ipv6 = lease.ipv6;
    n.ipv6_prefix_len = leases_->ipv6_prefix()->prefix_len;
    n.ipv6_gateway = leases_->ipv6_prefix()->AddressAt(Ipv4Cidr::kGatewayIndex);
  }
  return n;
}

base::Result<VmNetwork> Network::Setup(const VmNetworkRequest& request) {
  if (request.vm_id.empty()) return base::InvalidArgumentError("vm_id is required");
  if (request.customer_id.empty()) return base::InvalidArgumentError("customer_id is required");
  const std::string key = NameKey(request.vm_id);
  const VmNames names = internal::NamesFor(options_.name_prefix, key);
  const std::string& ns = names.netns;
  const std::string& hv = names.host_veth;
  const std::string tap(internal::kTapName);
  const std::string eth(internal::kGuestLinkName);
  const std::string br(internal::kNsBridgeName);
  observe::Logger vm_log = options_.logger.With({{"vm_id", request.vm_id}, {"netns", ns}});

  std::optional<Lease> lease;
  std::vector<Step> steps;
  steps.push_back({"lease",
                   [&]() -> base::Status {
                     ASSIGN_OR_RETURN(lease, leases_->Allocate(request.vm_id, request.customer_id));
                     return base::OkStatus();
                   },
                   [&] { return leases_->Release(request.vm_id); }, true});
  steps.push_back({"netns",
                   [&] {
                     return RunChecked(*runner_, Ip({"netns", "add", ns})).status();
                   },
                   [&] { return DeleteNetns(ns); }});
  steps.push_back({"veth",
                   [&] {
                     return RunChecked(*runner_, Ip({"link", "add", "name", hv, "type", "veth",
                                                     "peer", "name", eth, "netns", ns}))
                         .status();
                   },
                   [&] { return DeleteLink(hv); }});
  // The filter is in place before the port joins the bridge: no frame ever passes unfiltered.
  steps.push_back(
      {"filter",
       [&] {
         internal::VmRuleParams p;
         p.mac = DeriveMac(request.vm_id);
         p.ipv4 = lease->ipv4;
         p.ipv6 = lease->ipv6;
         p.customer_tag = lease->customer_tag;
         p.tx_bytes_per_sec = request.tx_bytes_per_sec;
         return RunNft(internal::VmRulesScript(options_.name_prefix, names, p));
       },
       [&] { return RunNft(internal::VmRulesDeleteScript(options_.name_prefix, names)); }});
  steps.push_back({"host_port",
                   [&] {
                     return RunChecked(*runner_,
                                       Ip({"link", "set", "dev", hv, "master", bridge_, "up"}))
                         .status();
                   },
                   nullptr});
  steps.push_back({"tap",
                   [&] {
                     std::vector<std::string> args = {"-n",  ns,  "tuntap", "add",
                                                      "dev", tap, "mode",   "tap"};
                     if (request.tap_owner_uid) {
                       args.push_back("user");
                       args.push_back(std::to_string(*request.tap_owner_uid));
                     }
                     if (request.tap_owner_gid) {
                       args.push_back("group");
                       args.push_back(std::to_string(*request.tap_owner_gid));
                     }
                     return RunChecked(*runner_, Ip(std::move(args))).status();
                   },
                   nullptr});
  steps.push_back(
      {"guest_link",
       [&] {
         // One `ip -batch` run: the namespace's bridge joins tap0 and eth0. No
         // IPv6 link-local addresses inside the namespace: its own interfaces
         // would only send frames the anti-spoofing filter drops.
         std::string batch;
         batch += "link add name " + br + " type bridge\n";
         for (const std::string& l : {br, eth, tap}) {
           batch += "link set dev " + l + " addrgenmode none\n";
         }
         batch += "link set dev " + tap + " master " + br + "\n";
         batch += "link set dev " + eth + " master " + br + "\n";
         for (const std::string& l : {std::string("lo"), eth, tap, br}) {
           batch += "link set dev " + l + " up\n";
         }
         return RunChecked(*runner_, Command{{"ip", "-n", ns, "-batch", "-"}, batch}).status();
       },
       nullptr});
  if (request.rx_bytes_per_sec > 0) {
    steps.push_back(
        {"rate_limit",
         [&] {
           uint64_t burst = std::max<uint64_t>(request.rx_bytes_per_sec / 10, 64 * 1024);
           return RunChecked(*runner_,
                             Command{{"tc", "qdisc", "replace", "dev", hv, "root", "tbf", "rate",
                                      std::to_string(request.rx_bytes_per_sec * 8) + "bit", "burst",
                                      std::to_string(burst), "latency", "50ms"},
                                     ""})
               .status();
         },
         nullptr});
  }

  for (size_t i = 0; i < steps.size(); ++i) {
    base::Status st = steps[i].run();
    if (st.ok()) continue;
    // Undo in reverse, the failed step first (unless it is atomic). Undo errors are logged; the
    // objects they leave are still found by ListLeftovers and removed by Teardown.
    size_t from = steps[i].atomic_on_failure ? i : i + 1;
    for (size_t j = from; j-- > 0;) {
      if (!steps[j].undo) continue;
      base::Status undone = steps[j].undo();
      if (!undone.ok()) {
        vm_log.Error("Undo of network step failed", {{"step", steps[j].name}, {"error", undone}});
      }
    }
    vm_log.Warn("VM network setup failed", {{"step", steps[i].name}, {"error", st}});
    // Pool exhaustion and a duplicate VM keep their codes; host failures are internal anyway.
    return st.WithContext("Setup " + request.vm_id + ": step " + steps[i].name);
  }
  VmNetwork net = FromLease(*lease);
  vm_log.Info("VM network set up", {{"ipv4", net.ipv4}, {"mac", net.mac}});
  return net;
}

base::Status Network::RemoveObjects(std::string_view key) {
  const VmNames names = internal::NamesFor(options_.name_prefix, key);
  base::Status first;
  auto note = [&](base::Status st) {
    if (first.ok() && !st.ok()) first = std::move(st);
  };
  base::Status nft = RunNft(internal::VmRulesDeleteScript(options_.name_prefix, names));
  if (!nft.ok()) {
    // Without the host table there is nothing of the VM in nftables either.
    base::Result<CommandResult> table =
        runner_->Run(Command{{"nft", "list", "table", "bridge", options_.name_prefix}, ""});
    if (!table.ok() || table->exit_code == 0) note(nft);
  }
  note(DeleteLink(names.host_veth));
  note(DeleteNetns(names.netns));
  return first;
}

base::Status Network::Teardown(std::string_view vm_id) {
  if (vm_id.empty()) return base::InvalidArgumentError("vm_id is required");
  const std::string context = "Teardown " + std::string(vm_id);
  RETURN_IF_ERROR(RemoveObjects(NameKey(vm_id)).WithContext(context));
  RETURN_IF_ERROR(leases_->Release(vm_id).WithContext(context));
  options_.logger.Info("VM network removed", {{"vm_id", vm_id}});
  return base::OkStatus();
}

base::Result<VmNetwork> Network::Lookup(std::string_view vm_id) {
  ASSIGN_OR_RETURN(std::optional<Lease> lease, leases_->Get(vm_id));
  if (!lease) return base::NotFoundError("VM " + std::string(vm_id) + " has no network");
  return FromLease(*lease);
}

base::Result<NetworkInventory> Network::ListLeftovers() {
  NetworkInventory inv;
  const std::string& p = options_.name_prefix;
  ASSIGN_OR_RETURN(std::vector<std::string> netns, ListNetns());
  for (const std::string& n : netns) {
    if (n.rfind(p + "-", 0) == 0 && IsHexKey(std::string_view(n).substr(p.size() + 1))) {
      inv.namespaces.push_back(n);
    }
  }
  ASSIGN_OR_RETURN(std::vector<std::string> links, ListHostLinks());
  for (const std::string& l : links) {
    if (l.rfind(p + "v", 0) == 0 && IsHexKey(std::string_view(l).substr(p.size() + 1))) {
      inv.links.push_back(l);
    }
  }
  std::unique_lock<std::mutex> nft_lock(nft_mu_);
  base::Result<CommandResult> table =
      runner_->Run(Command{{"nft", "-j", "list", "table", "bridge", p}, ""});
  nft_lock.unlock();
  if (!table.ok()) return table.status();
  if (table->exit_code == 0) {
    nlohmann::json doc = nlohmann::json::parse(table->stdout_data, nullptr, false);
    if (doc.is_discarded() || !doc.contains("nftables")) {
      return base::InternalError("Unparsable `nft -j list table bridge " + p + "` output");
    }
    for (const nlohmann::json& item : doc["nftables"]) {
      if (item.contains("chain")) {
        std::string name = item["chain"].value("name", "");
        if ((name.rfind("vm_", 0) == 0 || name.rfind("to_", 0) == 0) &&
            IsHexKey(std::string_view(name).substr(3))) {
          inv.nft_objects.push_back("chain " + name);
        }
      } else if (item.contains("map")) {
        const nlohmann::json& map = item["map"];
        std::string name = map.value("name", "");
        if (!map.contains("elem")) continue;
        for (const nlohmann::json& elem : map["elem"]) {
          // A map element is [key, value]; keys of interface maps are strings.
          if (elem.is_array() && !elem.empty() && elem[0].is_string()) {
            inv.nft_objects.push_back("element " + name + " " + elem[0].get<std::string>());
          }
        }
      }
    }
  }
  ASSIGN_OR_RETURN(std::vector<Lease> leases, leases_->List());
  for (const Lease& l : leases) inv.leases.push_back(l.vm_id + " " + l.ipv4);
  for (auto* v : {&inv.namespaces, &inv.links, &inv.nft_objects, &inv.leases}) {
    std::sort(v->begin(), v->end());
  }
  return inv;
}

base::Status Network::RemoveLeftovers(const std::set<std::string>& keep_vm_ids) {
  std::set<std::string> keep_keys;
  for (const std::string& id : keep_vm_ids) keep_keys.insert(NameKey(id));
  base::Status first;
  auto note = [&](base::Status st) {
    if (first.ok() && !st.ok()) first = std::move(st);
  };
  ASSIGN_OR_RETURN(std::vector<Lease> leases, leases_->List());
  for (const Lease& l : leases) {
    if (keep_vm_ids.count(l.vm_id) == 0) note(Teardown(l.vm_id));
  }
  ASSIGN_OR_RETURN(NetworkInventory inv, ListLeftovers());
  const size_t plen = options_.name_prefix.size() + 1;
  std::set<std::string> orphans;
  for (const std::string& n : inv.namespaces) orphans.insert(n.substr(plen));
  for (const std::string& l : inv.links) orphans.insert(l.substr(plen));
  for (const std::string& o : inv.nft_objects) {
    // "chain vm_<key>" / "element from_ports <prefix>v<key>".
    if (o.size() >= kNameKeyLength) orphans.insert(o.substr(o.size() - kNameKeyLength));
  }
  for (const std::string& key : orphans) {
    if (keep_keys.count(key) == 0 && IsHexKey(key)) {
      options_.logger.Warn("Removing leftover VM network objects", {{"key", key}});
      note(RemoveObjects(key).WithContext("RemoveLeftovers " + key));
    }
  }
  return first;
}

base::Status Network::DestroyHost() {
  ASSIGN_OR_RETURN(NetworkInventory inv, ListLeftovers());
  if (!inv.empty()) {
    return base::FailedPreconditionError("VM networks remain:\n" + inv.ToString());
  }
  RETURN_IF_ERROR(RunNft(internal::HostRulesDeleteScript(options_.name_prefix)));
  return DeleteLink(bridge_);
}

}  // namespace metald::net

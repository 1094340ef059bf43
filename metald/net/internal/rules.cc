#include "metald/net/internal/rules.h"

#include <algorithm>
#include <cstdio>

namespace metald::net::internal {
namespace {

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

}  // namespace

VmNames NamesFor(std::string_view prefix, std::string_view key) {
  VmNames n;
  n.netns = std::string(prefix) + "-" + std::string(key);
  n.netns_path = "/run/netns/" + n.netns;
  n.host_veth = std::string(prefix) + "v" + std::string(key);
  n.from_chain = "vm_" + std::string(key);
  n.to_chain = "to_" + std::string(key);
  return n;
}

std::string BridgeName(std::string_view prefix) { return std::string(prefix) + "0"; }

std::string HostRulesScript(std::string_view prefix, std::string_view ipv4_cidr,
                            std::string_view nat_uplink) {
  const std::string t = "bridge " + std::string(prefix);
  std::string s;
  s += "add table " + t + "\n";
  // Port name -> jump to that VM's chain. Frames from / to ports not in the maps (the bridge's
  // own traffic) pass untouched.
  s += "add map " + t + " from_ports { type ifname : verdict; }\n";
  s += "add map " + t + " to_ports { type ifname : verdict; }\n";
  // prerouting sees every frame a port receives, before the bridge decides anything: the
  // anti-spoofing point. priority -200 runs it before any other bridge filter.
  s += "add chain " + t +
       " ingress_hook { type filter hook prerouting priority -200; policy accept; }\n";
  s += "flush chain " + t + " ingress_hook\n";
  s += "add rule " + t + " ingress_hook iifname vmap @from_ports\n";
  // forward sees each frame once per port it leaves by (also each copy of a flooded frame), so
  // guest-to-guest traffic on the bridge is checked per destination: the isolation point.
  s += "add chain " + t + " forward_hook { type filter hook forward priority 0; policy accept; }\n";
  s += "flush chain " + t + " forward_hook\n";
  s += "add rule " + t + " forward_hook oifname vmap @to_ports\n";
  // output sees frames the host sends into the bridge. A guest packet the host routed back (it
  // keeps its mark) is checked like a bridged one; the host's own packets (no metald mark) pass.
  s += "add chain " + t + " output_hook { type filter hook output priority 0; policy accept; }\n";
  s += "flush chain " + t + " output_hook\n";
  s += "add rule " + t + " output_hook meta mark & " + Hex(kMarkMask) + " == " + Hex(kMarkBase) +
       " oifname vmap @to_ports\n";

  const std::string nat = "inet " + std::string(prefix);
  s += "add table " + nat + "\n";
  s += "delete table " + nat + "\n";
  if (!nat_uplink.empty()) {
    s += "add table " + nat + "\n";
    s += "add chain " + nat +
         " nat_postrouting { type nat hook postrouting priority 100; policy accept; }\n";
    s += "add rule " + nat + " nat_postrouting ip saddr " + std::string(ipv4_cidr) + " oifname \"" +
         std::string(nat_uplink) + "\" masquerade\n";
  }
  return s;
}

std::string HostRulesDeleteScript(std::string_view prefix) {
  std::string s;
  for (std::string_view family : {"bridge", "inet"}) {
    const std::string t = std::string(family) + " " + std::string(prefix);
    s += "add table " + t + "\ndelete table " + t + "\n";
  }
  return s;
}

std::string VmRulesScript(std::string_view prefix, const VmNames& n, const VmRuleParams& p) {
  const std::string t = "bridge " + std::string(prefix);
  const std::string from = "add rule " + t + " " + n.from_chain + " ";
  std::string s;
  s += "add chain " + t + " " + n.from_chain + "\n";
  // Only the guest's own MAC, and only IPv4/ARP (and IPv6 when it has an address): VLAN tags and
  // other ether types cannot smuggle frames past the checks below.
  s += from + "ether saddr != " + p.mac + " drop\n";
  s += from + "ether type != { ip, arp" + std::string(p.ipv6.empty() ? "" : ", ip6") + " } drop\n";
  s += from + "arp saddr ether != " + p.mac + " drop\n";
  s += from + "arp saddr ip != " + p.ipv4 + " drop\n";
  s += from + "ip saddr != " + p.ipv4 + " drop\n";
  if (!p.ipv6.empty()) {
    // Link-local (neighbour discovery) and :: (duplicate address detection) are needed on the
    // segment; isolation between customers does not rest on addresses but on the mark.
    s += from + "ip6 saddr != { " + p.ipv6 + ", fe80::/64, :: } drop\n";
  }
  if (p.tx_bytes_per_sec > 0) {
    uint64_t burst = std::max<uint64_t>(p.tx_bytes_per_sec / 10, 64 * 1024);
    s += from + "limit rate over " + std::to_string(p.tx_bytes_per_sec) + " bytes/second burst " +
         std::to_string(burst) + " bytes drop\n";
  }
  s += from + "meta mark set " + Hex(MarkFor(p.customer_tag)) + "\n";
  s += "add chain " + t + " " + n.to_chain + "\n";
  s += "add rule " + t + " " + n.to_chain + " meta mark != " + Hex(MarkFor(p.customer_tag)) +
       " drop\n";
  s += "add element " + t + " from_ports { \"" + n.host_veth + "\" : jump " + n.from_chain + " }\n";
  s += "add element " + t + " to_ports { \"" + n.host_veth + "\" : jump " + n.to_chain + " }\n";
  return s;
}

std::string VmRulesDeleteScript(std::string_view prefix, const VmNames& n) {
  const std::string t = "bridge " + std::string(prefix);
  std::string s;
  s += "add chain " + t + " " + n.from_chain + "\n";
  s += "add chain " + t + " " + n.to_chain + "\n";
  s += "add element " + t + " from_ports { \"" + n.host_veth + "\" : jump " + n.from_chain + " }\n";
  s += "add element " + t + " to_ports { \"" + n.host_veth + "\" : jump " + n.to_chain + " }\n";
  s += "delete element " + t + " from_ports { \"" + n.host_veth + "\" }\n";
  s += "delete element " + t + " to_ports { \"" + n.host_veth + "\" }\n";
  s += "flush chain " + t + " " + n.from_chain + "\n";
  s += "delete chain " + t + " " + n.from_chain + "\n";
  s += "flush chain " + t + " " + n.to_chain + "\n";
  s += "delete chain " + t + " " + n.to_chain + "\n";
  return s;
}

}  // namespace metald::net::internal

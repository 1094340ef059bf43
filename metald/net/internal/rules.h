#pragma once
// Private to metald/net: the host-side names of a VM's network objects and the nftables scripts
// that filter its traffic. Pure functions (no I/O) so the scripts can be unit-tested as text; the
// system test proves what they do to packets.

#include <cstdint>
#include <string>
#include <string_view>

namespace metald::net::internal {

// Packet mark carried by every frame a guest sends: kMarkBase | customer tag (tag < 2^24). The
// high byte keeps metald's marks apart from marks other host software may use.
inline constexpr uint32_t kMarkBase = 0x6d000000;
inline constexpr uint32_t kMarkMask = 0xff000000;
inline uint32_t MarkFor(uint32_t customer_tag) { return kMarkBase | customer_tag; }

// Names inside the VM's namespace (the same for every VM).
inline constexpr std::string_view kTapName = "tap0";
inline constexpr std::string_view kGuestLinkName = "eth0";
inline constexpr std::string_view kNsBridgeName = "br0";

// Names of one VM's objects, all derived from the name prefix and the VM's name key.
struct VmNames {
  std::string netns;       // "<prefix>-<key>"
  std::string netns_path;  // "/run/netns/<netns>"
  std::string host_veth;   // "<prefix>v<key>", in the host namespace, a port of the host bridge
  std::string from_chain;  // "vm_<key>": frames the guest sends (anti-spoofing, mark, tx limit)
  std::string to_chain;    // "to_<key>": frames towards the guest (customer isolation)
};
VmNames NamesFor(std::string_view prefix, std::string_view key);

// Host-wide objects: the bridge "<prefix>0" and the tables "bridge <prefix>" / "inet <prefix>".
std::string BridgeName(std::string_view prefix);

// nft script (for `nft -f -`) creating or refreshing the host-wide filter: table bridge <prefix>
// with the verdict maps from_ports / to_ports and base chains on prerouting, forward and output.
// Idempotent: per-VM chains and map elements already present are kept. With a non-empty
// `nat_uplink` it also (re)creates table inet <prefix> masquerading `ipv4_cidr` out of that
// link; without one it removes that table.
std::string HostRulesScript(std::string_view prefix, std::string_view ipv4_cidr,
                            std::string_view nat_uplink);
// Script removing both host-wide tables (and with them every per-VM chain). Idempotent.
std::string HostRulesDeleteScript(std::string_view prefix);

struct VmRuleParams {
  std::string mac;   // The guest's MAC.
  std::string ipv4;  // The guest's only allowed IPv4 source.
  std::string ipv6;  // The guest's global IPv6 source; empty = the guest sends no IPv6.
  uint32_t customer_tag = 0;
  uint64_t tx_bytes_per_sec = 0;  // 0 = unlimited.
};
// Script adding one VM's chains and map elements (one atomic transaction).
std::string VmRulesScript(std::string_view prefix, const VmNames& names, const VmRuleParams& p);
// Script removing them; succeeds whether or not they exist (each object is added, then deleted,
// in the same transaction). REQUIRES: the host table exists.
std::string VmRulesDeleteScript(std::string_view prefix, const VmNames& names);

}  // namespace metald::net::internal

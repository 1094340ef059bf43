#pragma once
// Pure address arithmetic for metald/net: IPv4 CIDR pools, IPv6 prefixes, the MAC address and the
// short name key derived from a VM id. No I/O.
//
// Thread-safety: plain values and pure functions.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "metald/base/status.h"

namespace metald::net {

// An IPv4 network. Invariant: the host bits of `network` are zero; 8 <= prefix_len <= 30.
struct Ipv4Cidr {
  uint32_t network = 0;  // Host byte order.
  int prefix_len = 0;

  // Number of addresses in the network, network and broadcast included.
  uint64_t size() const { return uint64_t{1} << (32 - prefix_len); }
  // The address at `host_index` (0 = network address). REQUIRES: host_index < size().
  uint32_t At(uint64_t host_index) const { return network + static_cast<uint32_t>(host_index); }
  // The gateway (the host bridge's address) is always host index 1.
  static constexpr uint64_t kGatewayIndex = 1;
  // Guests get host indexes [first_guest_index(), last_guest_index()]: never the network address,
  // the gateway or the broadcast address. A /30 has exactly one guest address.
  static constexpr uint64_t first_guest_index() { return 2; }
  uint64_t last_guest_index() const { return size() - 2; }
  // "10.213.0.0/16".
  std::string ToString() const;
};

// Parses "a.b.c.d/n". invalid_argument unless the text is a well-formed address with
// 8 <= n <= 30 and no host bits set ("10.0.0.1/24" is refused: say "10.0.0.0/24").
base::Result<Ipv4Cidr> ParseIpv4Cidr(std::string_view text);
// Parses a dotted quad into host byte order.
base::Result<uint32_t> ParseIpv4(std::string_view text);
// Host byte order to dotted quad.
std::string FormatIpv4(uint32_t address);

// An IPv6 prefix. Invariant: bits past prefix_len are zero; 48 <= prefix_len <= 120.
struct Ipv6Prefix {
  std::array<uint8_t, 16> bytes{};
  int prefix_len = 0;

  // The prefix with `host_index` in its low bits, e.g. fd00::/64 + 5 = "fd00::5".
  // REQUIRES: host_index fits in the 128 - prefix_len host bits.
  std::string AddressAt(uint64_t host_index) const;
  // "fd00:6d74::/64" (canonical inet_ntop form).
  std::string ToString() const;
};

// Parses "prefix/n" (inet_pton syntax). invalid_argument unless 48 <= n <= 120 and no bits past
// n are set.
base::Result<Ipv6Prefix> ParseIpv6Prefix(std::string_view text);

// 64-bit FNV-1a of `data`, started from `seed` instead of the standard offset basis.
uint64_t Fnv1a64(std::string_view data, uint64_t seed = 0xcbf29ce484222325ull);

// Length of NameKey().
inline constexpr size_t kNameKeyLength = 10;

// The per-VM key used in every host-side name (netns, veth, nftables chains): 10 lower-case hex
// digits (40 bits) of a hash of the VM id. Deterministic, so a half-created VM can be torn down
// from its id alone; the lease table's UNIQUE constraint catches the (improbable) collision.
std::string NameKey(std::string_view vm_id);

// The guest's MAC address, derived from the VM id: "02:xx:xx:xx:xx:xx" — locally administered
// (bit 1 of the first octet set), unicast (bit 0 clear), the other 40 bits from a hash of the id
// (a different hash from NameKey). Deterministic and lower-case.
std::string DeriveMac(std::string_view vm_id);

}  // namespace metald::net

#pragma once
// LeaseStore: guest address leases in SQLite. One lease per VM holds an IPv4 address from the
// configured pool (and, when an IPv6 prefix is configured, the IPv6 address with the same host
// index), the VM's name key and its customer's tag (the nftables mark that separates customers).
//
// Allocation walks the pool with a cursor: the next lease is the first free host index at or after
// the one after the previous allocation, wrapping to the start of the pool. A released address is
// therefore not handed out again until the pool has gone round once (stale ARP entries in other
// guests age out first), and the pool is used to its last address (no 253-address ceiling: a /16
// has 65533 guest addresses).
//
// Invariants (enforced by the schema, so they also hold across processes):
//  - at most one lease per VM (PRIMARY KEY vm_id);
//  - an address is held by at most one VM (UNIQUE(pool, host_index), UNIQUE ipv6);
//  - a name key is used by at most one VM (UNIQUE name_key);
//  - a customer's tag is the same for all its leases, and distinct customers holding leases have
//    distinct tags (net_customer_tags, row removed with the customer's last lease).
//
// The store uses its own database file (its migrations are numbered independently of the VM
// repository's): e.g. <state dir>/net.db.
//
// Thread-safety: all methods are safe to call concurrently (store::Database serialises writes).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "metald/base/status.h"
#include "metald/net/address.h"
#include "metald/store/db.h"

namespace metald::net {

struct Lease {
  std::string vm_id;
  std::string customer_id;
  std::string pool;           // The IPv4 pool the address came from, e.g. "10.213.0.0/16".
  uint64_t host_index = 0;    // Offset of the address in the pool (>= 2).
  std::string ipv4;           // "10.213.0.2".
  int ipv4_prefix_len = 0;    // The pool's prefix length.
  std::string ipv6;           // "fd00::2"; empty when no IPv6 prefix was configured.
  std::string name_key;       // NameKey(vm_id).
  uint32_t customer_tag = 0;  // 1 .. kMaxCustomerTag.
  int64_t created_at_ns = 0;
  friend bool operator==(const Lease&, const Lease&) = default;
};

// Customer tags live in the low 24 bits of a packet mark.
inline constexpr uint32_t kMaxCustomerTag = (1u << 24) - 1;

struct LeaseStoreOptions {
  // SQLite file, or ":memory:" (tests). Required.
  std::string db_path;
  // The IPv4 pool, "a.b.c.d/n" with 8 <= n <= 30. Default: "10.213.0.0/16".
  std::string ipv4_cidr = "10.213.0.0/16";
  // IPv6 prefix, e.g. "fd6d:746c:6400::/64"; empty = no IPv6 addresses. Default: empty.
  std::string ipv6_prefix;
  // Clock for created_at_ns (ns since the Unix epoch). Default: system_clock.
  std::function<int64_t()> now_unix_ns;
};

// The schema steps of the lease database (exposed for tests and tooling).
const std::vector<store::Migration>& LeaseMigrations();

class LeaseStore {
 public:
  // Parses the pool settings (invalid_argument naming the option) and opens the database.
  static base::Result<std::unique_ptr<LeaseStore>> Open(LeaseStoreOptions options);

  // Leases the next free address to `vm_id` for `customer_id`.
  // Errors: already_exists when the VM already holds a lease (or, improbably, another VM holds its
  // name key); resource_exhausted "Address pool ... is exhausted" when every guest address is
  // held; invalid_argument for an empty vm_id or customer_id; SQLite errors as mapped by store.
  base::Result<Lease> Allocate(std::string_view vm_id, std::string_view customer_id);

  // The VM's lease, or nullopt.
  base::Result<std::optional<Lease>> Get(std::string_view vm_id);

  // Removes the VM's lease (and its customer's tag when that was the customer's last lease).
  // OK when the VM holds none (idempotent).
  base::Status Release(std::string_view vm_id);

  // Every lease, ordered by vm_id.
  base::Result<std::vector<Lease>> List();

  const Ipv4Cidr& ipv4_pool() const { return ipv4_pool_; }
  // The pool's gateway address, "10.213.0.1".
  std::string ipv4_gateway() const { return FormatIpv4(ipv4_pool_.At(Ipv4Cidr::kGatewayIndex)); }
  // Present when an IPv6 prefix is configured.
  const std::optional<Ipv6Prefix>& ipv6_prefix() const { return ipv6_prefix_; }

 private:
  LeaseStore(LeaseStoreOptions options, Ipv4Cidr pool, std::optional<Ipv6Prefix> v6,
             std::unique_ptr<store::Database> db);

  // Constant after construction.
  const LeaseStoreOptions options_;
  const Ipv4Cidr ipv4_pool_;
  const std::optional<Ipv6Prefix> ipv6_prefix_;
  const std::string pool_key_;  // ipv4_pool_.ToString().
  const std::unique_ptr<store::Database> db_;
};

}  // namespace metald::net

#pragma once
// Start here. metald/net: per-VM host networking (style.md layer 2). docs/networking.md draws the
// topology; in short, per VM:
//
//   guest virtio-net ── tap0 ┐                     host namespace
//                            br0 ── eth0 ══ veth ══ <prefix>v<key> ── bridge <prefix>0 (gateway)
//   network namespace <prefix>-<key>  ─────────┘                       nftables: bridge <prefix>
//
// Network::Setup leases an address (SQLite), makes the namespace, the veth pair, the nftables
// filter (only the guest's MAC and IP may leave its port; frames between guests of different
// customers are dropped on the host bridge), attaches the port, makes the TAP for the VMM, joins
// tap0 and eth0 with a bridge inside the namespace and applies the optional rate limit. Each step
// is recorded; when one fails, the steps done so far are undone in reverse order (the failed step
// too, as it may have half happened), so a failed Setup leaves nothing behind. Teardown removes
// everything from the VM id alone and may be called on a VM in any state of creation.
//
// Every change to the host is a command (`ip`, `nft`, `tc`) run through the injected
// CommandRunner, so tests can fail any step on purpose.
//
// Concurrency model: a Network is safe to use from any number of threads. Calls for different
// VMs may run concurrently; nftables transactions are serialised by nft_mu_. REQUIRES of callers:
// at most one Setup/Teardown at a time per VM (the service's per-VM actor gives that).

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "metald/base/status.h"
#include "metald/net/command_runner.h"
#include "metald/net/lease_store.h"
#include "metald/observe/log.h"

namespace metald::net {

struct NetworkOptions {
  // Prefix of every host object metald/net creates: bridge "<prefix>0", namespaces
  // "<prefix>-<key>", host veth ends "<prefix>v<key>", nftables tables "bridge <prefix>" and
  // "inet <prefix>" (<key>: 10 hex digits derived from the VM id). 1 to 4 characters of [a-z0-9],
  // starting with a letter (so "<prefix>v<key>" fits the kernel's 15-character interface names).
  // Two Networks with different prefixes never touch each other's objects. Default: "mtld".
  std::string name_prefix = "mtld";
  // Guest IPv4 pool; the first host address is the gateway (the host bridge's address). "a.b.c.d/n"
  // with 8 <= n <= 30. Default: "10.213.0.0/16" (65533 guests).
  std::string ipv4_cidr = "10.213.0.0/16";
  // Guest IPv6 prefix (48 <= n <= 120); guest i gets prefix::i, the bridge prefix::1. Empty = no
  // IPv6 (the guests' IPv6 frames are then dropped). Default: empty.
  std::string ipv6_prefix;
  // SQLite file holding the leases (its own file; ":memory:" in unit tests). Required.
  std::string lease_db_path;
  // When set, guest traffic leaving the host by this link is masqueraded (table inet <prefix>)
  // and net.ipv4.ip_forward is turned on (and left on). Default: empty (no NAT, no sysctl change).
  std::string nat_uplink;
  // Where steps and failures are logged. Default: a logger on stderr.
  observe::Logger logger;
  // Clock for lease timestamps (ns since the Unix epoch). Default: system_clock.
  std::function<int64_t()> now_unix_ns;
};

struct VmNetworkRequest {
  std::string vm_id;              // Required. Any string; ids of model::VmIdGenerator in practice.
  std::string customer_id;        // Required. Guests of the same customer share a segment.
  uint64_t rx_bytes_per_sec = 0;  // Traffic towards the guest (tc tbf on the host port); 0 = none.
  uint64_t tx_bytes_per_sec = 0;  // Traffic from the guest (nftables limit); 0 = none.
  // Owner of the TAP device, so a VMM running as this uid/gid may attach to it. Default: root.
  std::optional<uid_t> tap_owner_uid;
  std::optional<gid_t> tap_owner_gid;
};

// What the VMM and the guest need. Plain value.
struct VmNetwork {
  std::string vm_id;
  std::string customer_id;
  std::string netns_name;  // "mtld-0a1b2c3d4e"; run the VMM in it (setns or `ip netns exec`).
  std::string netns_path;  // "/run/netns/mtld-0a1b2c3d4e".
  std::string tap_name;    // "tap0", inside the namespace: `-netdev tap,ifname=tap0,script=no`.
  std::string host_veth;   // "mtldv0a1b2c3d4e", the VM's port on the host bridge.
  std::string mac;         // The guest NIC's MAC ("02:..."); the only source MAC allowed.
  std::string ipv4;        // "10.213.0.2".
  int ipv4_prefix_len = 0;
  std::string ipv4_gateway;  // "10.213.0.1".
  std::string ipv6;          // Empty when no IPv6 prefix is configured.
  int ipv6_prefix_len = 0;
  std::string ipv6_gateway;

  // The guest image's contract (docs/guest-image.md): "metald.net=10.213.0.2/16,10.213.0.1".
  std::string KernelCmdlineFragment() const;
};

// Per-VM objects present on the host and in the lease database, as found by ListLeftovers.
// Sorted lists of names.
struct NetworkInventory {
  std::vector<std::string> namespaces;   // Network namespaces "<prefix>-<key>".
  std::vector<std::string> links;        // Host links "<prefix>v<key>".
  std::vector<std::string> nft_objects;  // "chain vm_<key>", "element from_ports <port>", ...
  std::vector<std::string> leases;       // "<vm_id> <ipv4>".

  bool empty() const {
    return namespaces.empty() && links.empty() && nft_objects.empty() && leases.empty();
  }
  // One line per object, for test failures and logs.
  std::string ToString() const;
  friend bool operator==(const NetworkInventory&, const NetworkInventory&) = default;
};

class Network {
 public:
  // Validates the options, opens the lease database and makes sure the host-wide objects exist
  // (bridge with the gateway addresses, nftables tables). Safe on a host where they already exist
  // (daemon restart): running VMs keep their per-VM objects. Errors: invalid_argument naming the
  // option; the first failing command otherwise. `runner` defaults to NewSubprocessRunner().
  static base::Result<std::unique_ptr<Network>> Open(
      NetworkOptions options, std::unique_ptr<CommandRunner> runner = nullptr);

  // Creates the VM's network (see the file comment) and returns what the VMM needs.
  // Errors: invalid_argument for a missing vm_id/customer_id; already_exists when the VM already
  // has a network (Teardown it first); resource_exhausted when the pool is full; otherwise the
  // failing step's error, prefixed "Setup <vm_id>: step <name>" (steps: lease, netns, veth,
  // filter, host_port, tap, guest_link, rate_limit). On any error nothing of the VM is left.
  base::Result<VmNetwork> Setup(const VmNetworkRequest& request);

  // Removes everything Setup may have created for `vm_id`, whether Setup finished, failed or was
  // cut short by a crash. OK when there is nothing to remove (idempotent). The lease is released
  // last and only when every host object is gone, so a failed Teardown can be retried and the
  // address is never handed out while anything of the VM remains.
  base::Status Teardown(std::string_view vm_id);

  // The VM's network from its lease (after a daemon restart); not_found when it has none.
  base::Result<VmNetwork> Lookup(std::string_view vm_id);

  // Every per-VM object with this Network's prefix: namespaces, host links, nftables chains and
  // map elements, leases. Used by tests to prove nothing leaks and by startup recovery.
  base::Result<NetworkInventory> ListLeftovers();

  // Startup recovery: tears down every VM network whose VM is not in `keep_vm_ids` — those with a
  // lease through Teardown, and objects without a lease (a crash between steps) by their names.
  // Returns the first error after trying everything.
  base::Status RemoveLeftovers(const std::set<std::string>& keep_vm_ids);

  // Removes the host-wide objects (bridge, nftables tables). REQUIRES: no VM networks remain
  // (failed_precondition otherwise). For tests and uninstall; the daemon leaves them in place.
  base::Status DestroyHost();

  const std::string& bridge_name() const { return bridge_; }
  LeaseStore& leases() { return *leases_; }

 private:
  Network(NetworkOptions options, std::unique_ptr<CommandRunner> runner,
          std::unique_ptr<LeaseStore> leases);

  base::Status EnsureHost();
  VmNetwork FromLease(const Lease& lease) const;
  // Removes the host objects named by `key` (nft, host veth, namespace); not the lease.
  base::Status RemoveObjects(std::string_view key);
  base::Status RunNft(const std::string& script);
  base::Status DeleteLink(const std::string& name);
  base::Status DeleteNetns(const std::string& name);
  base::Result<std::vector<std::string>> ListNetns();
  base::Result<std::vector<std::string>> ListHostLinks();

  // Constant after construction.
  const NetworkOptions options_;
  const std::string bridge_;
  const std::unique_ptr<CommandRunner> runner_;
  const std::unique_ptr<LeaseStore> leases_;

  // Serialises nft transactions: concurrent `nft -f` runs race on the ruleset generation.
  std::mutex nft_mu_;
};

}  // namespace metald::net

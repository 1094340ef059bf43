// System test of metald/net on the real host: real namespaces, veth pairs, TAPs, bridges and
// nftables, driven through `ip` and `nft` (needs root; skipped otherwise). Guests are faked
// without QEMU: each VM namespace gets an extra veth into a "guest" namespace that carries the
// guest's MAC and address, joined to the namespace's bridge next to tap0. Traffic stays inside
// this host (namespaces and the test bridge); nothing is sent to any outside network.
//
// Every run uses a random name prefix "xn??" and a random 10.2xx.yyy.0/24 pool, so it never
// touches metald's real objects; objects of an earlier run that crashed are removed first.
#include "metald/net/network.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "metald/net/address.h"
#include "metald/net/testing/fault_injecting_runner.h"

namespace metald::net {
namespace {

using testing::FaultInjectingRunner;
using ::testing::HasSubstr;

struct ShResult {
  int rc = -1;
  std::string out;
};

// Runs `cmd` with /bin/sh, stdout and stderr together.
ShResult Sh(const std::string& cmd) {
  ShResult r;
  FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
  if (f == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) r.out.append(buf, n);
  int status = ::pclose(f);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return r;
}

// Removes every object whose name matches the test prefixes ("xn" + 2 characters): stale
// objects of crashed runs, or this run's at the end.
void RemoveTestObjects(const std::string& prefix_regex) {
  Sh("for n in $(ip netns list | awk '{print $1}' | grep -E '^" + prefix_regex +
     "(-|g)'); do ip netns del $n; done");
  Sh("for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^" +
     prefix_regex + "(v|0$)'); do ip link del dev $l; done");
  Sh("for t in $(nft list tables | awk '{print $2\" \"$3}' | grep -E ' " + prefix_regex +
     "$' | tr ' ' ':'); do nft delete table $(echo $t | tr ':' ' '); done");
}

// What the host holds under `prefix`, as text: links, namespaces, both nftables tables.
std::string HostSnapshot(const std::string& prefix) {
  std::string s;
  s += Sh("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^" + prefix + "' | sort")
           .out;
  s += "--\n" + Sh("ip netns list | awk '{print $1}' | grep '^" + prefix + "' | sort").out;
  s += "--\n" + Sh("nft list table bridge " + prefix).out;
  s += "--\n" + Sh("nft list table inet " + prefix).out;
  return s;
}

class HostNetworkTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    RemoveTestObjects("xn[a-z0-9]{2}");
  }

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, nftables)";
    if (Sh("command -v ip && command -v nft && command -v ping").rc != 0) {
      GTEST_SKIP() << "needs ip, nft and ping";
    }
    std::random_device rd;
    std::mt19937 rng(rd());
    const char* alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    prefix_ = std::string("xn") + alphabet[rng() % 36] + alphabet[rng() % 36];
    cidr_ = "10." + std::to_string(200 + rng() % 50) + "." + std::to_string(rng() % 256) + ".0/24";
    subnet_ = cidr_.substr(0, cidr_.size() - 4);  // "10.x.y."
    subnet_.pop_back();
    subnet_ += ".";
    dir_ = std::filesystem::temp_directory_path() /
           ("metald_net_" + prefix_ + "_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    real_ = NewSubprocessRunner();
    auto fault = std::make_unique<FaultInjectingRunner>(real_.get());
    fault_ = fault.get();
    NetworkOptions o;
    o.name_prefix = prefix_;
    o.ipv4_cidr = cidr_;
    o.lease_db_path = (dir_ / "net.db").string();
    o.logger = observe::Logger(observe::LoggerOptions{observe::Level::kError, nullptr, nullptr});
    auto n = Network::Open(std::move(o), std::move(fault));
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    net_ = std::move(n).value();
    baseline_ = HostSnapshot(prefix_);
  }

  void TearDown() override {
    if (prefix_.empty()) return;
    for (const std::string& g : guests_) Sh("ip netns del " + g);
    if (net_) {
      fault_->Disarm();
      EXPECT_TRUE(net_->RemoveLeftovers({}).ok());
      EXPECT_TRUE(net_->DestroyHost().ok());
      net_.reset();
    }
    RemoveTestObjects(prefix_);
    EXPECT_EQ(Sh("ip netns list | grep '^" + prefix_ + "'").out, "");
    std::filesystem::remove_all(dir_);
  }

  VmNetworkRequest Req(const std::string& vm, const std::string& customer) {
    VmNetworkRequest r;
    r.vm_id = vm;
    r.customer_id = customer;
    return r;
  }

  // Puts a fake guest behind the VM's tap: namespace <prefix>g<i> with eth0 carrying the VM's
  // MAC and address, its peer a port of the VM namespace's bridge.
  std::string AttachGuest(const VmNetwork& n) {
    std::string g = prefix_ + "g" + std::to_string(guests_.size());
    guests_.push_back(g);
    for (const std::string& cmd : {
             "ip netns add " + g,
             "ip -n " + n.netns_name + " link add gp0 type veth peer name eth0 netns " + g,
             "ip -n " + n.netns_name + " link set dev gp0 master br0 up",
             "ip -n " + g + " link set dev eth0 address " + n.mac,
             "ip -n " + g + " addr add " + n.ipv4 + "/" + std::to_string(n.ipv4_prefix_len) +
                 " dev eth0",
             "ip -n " + g + " link set dev eth0 up",
             "ip -n " + g + " link set dev lo up",
             "ip -n " + g + " route add default via " + n.ipv4_gateway,
         }) {
      ShResult r = Sh(cmd);
      EXPECT_EQ(r.rc, 0) << cmd << ": " << r.out;
    }
    return g;
  }

  // True when `target` answers ping from guest namespace `g` (optionally from source `src`).
  bool Ping(const std::string& g, const std::string& target, const std::string& src = "",
            int count = 3) {
    std::string cmd = "ip netns exec " + g + " ping -n -q -c " + std::to_string(count) +
                      " -i 0.3 -W 2 " + (src.empty() ? "" : "-I " + src + " ") + target;
    return Sh(cmd).rc == 0;
  }

  NetworkInventory Inventory() {
    auto inv = net_->ListLeftovers();
    EXPECT_TRUE(inv.ok()) << inv.status().ToString();
    return inv.ok() ? *inv : NetworkInventory{};
  }

  void ExpectHostAsBaseline(const std::string& when) {
    NetworkInventory inv = Inventory();
    EXPECT_TRUE(inv.empty()) << when << ": left behind:\n" << inv.ToString();
    EXPECT_EQ(HostSnapshot(prefix_), baseline_) << when;
  }

  std::string prefix_, cidr_, subnet_;
  std::filesystem::path dir_;
  std::unique_ptr<CommandRunner> real_;
  FaultInjectingRunner* fault_ = nullptr;
  std::unique_ptr<Network> net_;
  std::string baseline_;
  std::vector<std::string> guests_;
};

TEST_F(HostNetworkTest, CustomersAreIsolatedAndSpoofedSourcesDropped) {
  auto a = net_->Setup(Req("vm-alice-1", "alice"));
  auto b = net_->Setup(Req("vm-alice-2", "alice"));
  auto c = net_->Setup(Req("vm-bob-1", "bob"));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(a->ipv4, subnet_ + "2");
  EXPECT_EQ(a->ipv4_gateway, subnet_ + "1");
  EXPECT_EQ(a->KernelCmdlineFragment(), "metald.net=" + subnet_ + "2/24," + subnet_ + "1");
  // What the VMM is handed exists: the namespace with tap0 in it.
  EXPECT_EQ(Sh("ip -n " + a->netns_name + " link show dev " + a->tap_name).rc, 0);
  EXPECT_TRUE(std::filesystem::exists(a->netns_path));

  NetworkInventory inv = Inventory();
  EXPECT_EQ(inv.namespaces.size(), 3u);
  EXPECT_EQ(inv.links.size(), 3u);
  EXPECT_EQ(inv.nft_objects.size(), 12u) << inv.ToString();  // 2 chains + 2 elements per VM.
  EXPECT_EQ(inv.leases.size(), 3u);

  std::string ga = AttachGuest(*a);
  std::string gb = AttachGuest(*b);
  std::string gc = AttachGuest(*c);

  // Same customer: reachable both ways. Everyone reaches the gateway.
  EXPECT_TRUE(Ping(ga, b->ipv4));
  EXPECT_TRUE(Ping(gb, a->ipv4));
  EXPECT_TRUE(Ping(ga, a->ipv4_gateway));
  EXPECT_TRUE(Ping(gc, c->ipv4_gateway));

  // Different customers: dropped both ways, even with the neighbour entry known (so not merely
  // ARP being filtered: unicast IP frames are dropped too).
  EXPECT_FALSE(Ping(ga, c->ipv4, "", 2));
  EXPECT_FALSE(Ping(gc, a->ipv4, "", 2));
  EXPECT_FALSE(Ping(gc, b->ipv4, "", 2));
  ASSERT_EQ(Sh("ip -n " + ga + " neigh replace " + c->ipv4 + " lladdr " + c->mac +
               " dev eth0 nud permanent")
                .rc,
            0);
  ASSERT_EQ(Sh("ip -n " + gc + " neigh replace " + a->ipv4 + " lladdr " + a->mac +
               " dev eth0 nud permanent")
                .rc,
            0);
  EXPECT_FALSE(Ping(ga, c->ipv4, "", 2));
  EXPECT_FALSE(Ping(gc, a->ipv4, "", 2));

  // A spoofed source address is dropped; the guest's own still works.
  const std::string spoofed = subnet_ + "200";
  ASSERT_EQ(Sh("ip -n " + ga + " addr add " + spoofed + "/24 dev eth0").rc, 0);
  EXPECT_FALSE(Ping(ga, b->ipv4, spoofed, 2));
  // Even when the reply path needs no ARP (B knows where the spoofed address lives), so it is the
  // IP source check that drops the request, not only the ARP check.
  ASSERT_EQ(Sh("ip -n " + gb + " neigh replace " + spoofed + " lladdr " + a->mac +
               " dev eth0 nud permanent")
                .rc,
            0);
  EXPECT_FALSE(Ping(ga, b->ipv4, spoofed, 2));
  EXPECT_TRUE(Ping(ga, b->ipv4, a->ipv4));

  // A spoofed source MAC is dropped too; the right one works again.
  ASSERT_EQ(Sh("ip -n " + ga + " link set dev eth0 address 02:00:00:00:00:99").rc, 0);
  Sh("ip -n " + gb + " neigh flush dev eth0");
  EXPECT_FALSE(Ping(ga, b->ipv4, "", 2));
  ASSERT_EQ(Sh("ip -n " + ga + " link set dev eth0 address " + a->mac).rc, 0);
  EXPECT_TRUE(Ping(ga, b->ipv4));

  for (const std::string& g : {ga, gb, gc}) Sh("ip netns del " + g);
  guests_.clear();
  for (const char* vm : {"vm-alice-1", "vm-alice-2", "vm-bob-1"}) {
    EXPECT_TRUE(net_->Teardown(vm).ok()) << vm;
  }
  ExpectHostAsBaseline("after deleting the three VMs");
}

TEST_F(HostNetworkTest, FailureAtEveryStepLeavesNothingBehind) {
  VmNetworkRequest req = Req("vm-faulty", "carol");
  req.rx_bytes_per_sec = 10'000'000;
  req.tx_bytes_per_sec = 10'000'000;
  req.tap_owner_uid = 4242;

  // A clean run counts the commands Setup makes.
  fault_->FailNth(1 << 30, FaultInjectingRunner::When::kBefore);
  auto ok = net_->Setup(req);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  const size_t commands = fault_->log().size();
  fault_->Disarm();
  EXPECT_EQ(Sh("tc qdisc show dev " + ok->host_veth + " | grep -c tbf").out, "1\n");
  ASSERT_TRUE(net_->Teardown(req.vm_id).ok());
  ExpectHostAsBaseline("after a clean setup and teardown");
  ASSERT_GE(commands, 7u);

  std::set<std::string> failed_steps;
  const std::regex step_re("step ([a-z_]+)");
  for (auto when : {FaultInjectingRunner::When::kBefore, FaultInjectingRunner::When::kAfter}) {
    for (size_t k = 0; k < commands; ++k) {
      const std::string what =
          std::string(when == FaultInjectingRunner::When::kBefore ? "failing before"
                                                                  : "failing after") +
          " command " + std::to_string(k);
      fault_->FailNth(static_cast<int>(k), when);
      auto r = net_->Setup(req);
      std::vector<std::string> log = fault_->log();
      fault_->Disarm();
      ASSERT_FALSE(r.ok()) << what;
      EXPECT_THAT(r.status().message(), HasSubstr("Setup vm-faulty: step ")) << what;
      EXPECT_THAT(r.status().message(), HasSubstr("injected failure")) << what;
      std::smatch m;
      std::string msg = r.status().message();
      if (std::regex_search(msg, m, step_re)) failed_steps.insert(m[1]);
      ExpectHostAsBaseline(what + " (" + (k < log.size() ? log[k] : "?") + ")");
      auto lease = net_->leases().Get(req.vm_id);
      ASSERT_TRUE(lease.ok());
      EXPECT_FALSE(lease->has_value()) << what;
    }
  }
  EXPECT_EQ(failed_steps, (std::set<std::string>{"netns", "veth", "filter", "host_port", "tap",
                                                 "guest_link", "rate_limit"}));

  // The lease step: a VM that already has a network is refused, and its network is left intact.
  ASSERT_TRUE(net_->Setup(req).ok());
  auto again = net_->Setup(req);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), base::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.status().message(), HasSubstr("step lease"));
  NetworkInventory inv = Inventory();
  EXPECT_EQ(inv.namespaces.size(), 1u) << inv.ToString();
  EXPECT_EQ(inv.nft_objects.size(), 4u) << inv.ToString();

  // Teardown that fails half way keeps the lease (and says so); a retry finishes the job.
  fault_->FailNth(0, FaultInjectingRunner::When::kBefore);  // The nft delete transaction.
  base::Status st = net_->Teardown(req.vm_id);
  fault_->Disarm();
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("Teardown vm-faulty"));
  inv = Inventory();
  EXPECT_EQ(inv.leases.size(), 1u) << inv.ToString();
  EXPECT_FALSE(inv.nft_objects.empty()) << inv.ToString();
  EXPECT_TRUE(net_->Teardown(req.vm_id).ok());
  EXPECT_TRUE(net_->Teardown(req.vm_id).ok());  // Idempotent.
  ExpectHostAsBaseline("after teardown retry");
}

TEST_F(HostNetworkTest, FiftyVmsCreatedAndDeletedLeaveTheHostAsItWas) {
  std::set<std::string> ips, macs;
  for (int round = 0; round < 2; ++round) {
    // Round 0: create all 50, then delete all. Round 1: create and delete one at a time.
    std::vector<std::string> live;
    for (int i = 0; i < 50; ++i) {
      std::string vm = "vm-loop-" + std::to_string(round) + "-" + std::to_string(i);
      auto n = net_->Setup(Req(vm, "cust-" + std::to_string(i % 3)));
      ASSERT_TRUE(n.ok()) << vm << ": " << n.status().ToString();
      if (round == 0) {
        EXPECT_TRUE(ips.insert(n->ipv4).second) << n->ipv4;
        EXPECT_TRUE(macs.insert(n->mac).second) << n->mac;
        live.push_back(vm);
      } else {
        ASSERT_TRUE(net_->Teardown(vm).ok()) << vm;
      }
    }
    if (round == 0) {
      NetworkInventory inv = Inventory();
      EXPECT_EQ(inv.namespaces.size(), 50u);
      EXPECT_EQ(inv.links.size(), 50u);
      EXPECT_EQ(inv.leases.size(), 50u);
      EXPECT_EQ(inv.nft_objects.size(), 200u);
    }
    for (const std::string& vm : live) ASSERT_TRUE(net_->Teardown(vm).ok()) << vm;
    ExpectHostAsBaseline("after round " + std::to_string(round));
  }
}

TEST_F(HostNetworkTest, ConcurrentSetupsAndTeardownsOfDifferentVms) {
  constexpr int kThreads = 4, kPerThread = 5;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::set<std::string> ips;
  std::vector<std::string> errors;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string vm = "vm-par-" + std::to_string(t) + "-" + std::to_string(i);
        auto n = net_->Setup(Req(vm, "cust-" + std::to_string(t % 2)));
        std::lock_guard<std::mutex> lock(mu);
        if (!n.ok()) {
          errors.push_back(n.status().ToString());
        } else if (!ips.insert(n->ipv4).second) {
          errors.push_back("duplicate address " + n->ipv4);
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  threads.clear();
  EXPECT_TRUE(errors.empty()) << errors.front();
  NetworkInventory inv = Inventory();
  EXPECT_EQ(inv.namespaces.size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(inv.nft_objects.size(), static_cast<size_t>(4 * kThreads * kPerThread));
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string vm = "vm-par-" + std::to_string(t) + "-" + std::to_string(i);
        base::Status st = net_->Teardown(vm);
        std::lock_guard<std::mutex> lock(mu);
        if (!st.ok()) errors.push_back(st.ToString());
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_TRUE(errors.empty()) << errors.front();
  ExpectHostAsBaseline("after concurrent setups and teardowns");
}

TEST_F(HostNetworkTest, RecoveryRemovesEverythingButTheKeptVms) {
  auto keep = net_->Setup(Req("vm-keep", "dave"));
  ASSERT_TRUE(keep.ok()) << keep.status().ToString();
  ASSERT_TRUE(net_->Setup(Req("vm-gone", "dave")).ok());
  // A crash in the middle of a Setup whose lease never made it to disk: objects, no lease.
  const std::string key = NameKey("vm-crashed");
  ASSERT_EQ(Sh("ip netns add " + prefix_ + "-" + key).rc, 0);
  ASSERT_EQ(Sh("ip link add " + prefix_ + "v" + key + " type veth peer name eth0 netns " + prefix_ +
               "-" + key)
                .rc,
            0);
  ASSERT_EQ(Sh("nft add chain bridge " + prefix_ + " vm_" + key).rc, 0);
  EXPECT_EQ(Inventory().namespaces.size(), 3u);

  ASSERT_TRUE(net_->RemoveLeftovers({"vm-keep"}).ok());
  NetworkInventory inv = Inventory();
  EXPECT_EQ(inv.namespaces, std::vector<std::string>{keep->netns_name});
  EXPECT_EQ(inv.links, std::vector<std::string>{keep->host_veth});
  EXPECT_EQ(inv.leases, std::vector<std::string>{"vm-keep " + keep->ipv4});
  EXPECT_EQ(inv.nft_objects.size(), 4u) << inv.ToString();
  auto looked = net_->Lookup("vm-keep");
  ASSERT_TRUE(looked.ok());
  EXPECT_EQ(looked->mac, keep->mac);

  // DestroyHost refuses while a VM network remains.
  EXPECT_EQ(net_->DestroyHost().code(), base::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(net_->Teardown("vm-keep").ok());
  ExpectHostAsBaseline("after recovery and teardown");
}

}  // namespace
}  // namespace metald::net

// Network against a scripted CommandRunner: the order of host changes, what Setup returns, and the
// reverse-order undo on failure. No root needed; network_test.cc proves the same on a real host.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <mutex>

#include "metald/net/address.h"
#include "metald/net/network.h"

namespace metald::net {
namespace {

using ::testing::HasSubstr;

VmNetworkRequest Req(std::string vm_id, std::string customer_id) {
  VmNetworkRequest r;
  r.vm_id = std::move(vm_id);
  r.customer_id = std::move(customer_id);
  return r;
}

class ScriptedRunner : public CommandRunner {
 public:
  base::Result<CommandResult> Run(const Command& c) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::string line = c.ToString();
    commands.push_back(line);
    stdins.push_back(c.stdin_data);
    if (!fail_substring.empty() && line.find(fail_substring) != std::string::npos) {
      fail_substring.clear();
      return CommandResult{2, "", "boom"};
    }
    // Nothing exists on this pretend host.
    if (line.rfind("ip link show dev", 0) == 0) return CommandResult{1, "", "does not exist"};
    if (line.rfind("nft -j list", 0) == 0) return CommandResult{0, "{\"nftables\": []}", ""};
    if (line == "ip netns list") return CommandResult{0, netns_list, ""};
    return CommandResult{0, "", ""};
  }
  // Index of the first command at or after `from` containing `s`, or -1.
  int Find(const std::string& s, size_t from = 0) const {
    for (size_t i = from; i < commands.size(); ++i) {
      if (commands[i].find(s) != std::string::npos) return static_cast<int>(i);
    }
    return -1;
  }

  std::mutex mu_;
  std::vector<std::string> commands;
  std::vector<std::string> stdins;
  std::string fail_substring;
  std::string netns_list;  // Output of `ip netns list`.
};

class NetworkUnitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto runner = std::make_unique<ScriptedRunner>();
    runner_ = runner.get();
    NetworkOptions o;
    o.name_prefix = "tst";
    o.ipv4_cidr = "10.9.0.0/24";
    o.lease_db_path = ":memory:";
    o.logger = observe::Logger(observe::LoggerOptions{observe::Level::kError, nullptr, nullptr});
    auto n = Network::Open(std::move(o), std::move(runner));
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    net_ = std::move(n).value();
  }

  ScriptedRunner* runner_ = nullptr;
  std::unique_ptr<Network> net_;
};

TEST_F(NetworkUnitTest, OpenCreatesTheHostBridgeAndTables) {
  EXPECT_GE(runner_->Find("ip link add name tst0 type bridge"), 0);
  EXPECT_GE(runner_->Find("ip addr replace 10.9.0.1/24 dev tst0"), 0);
  int nft = runner_->Find("nft -f -");
  ASSERT_GE(nft, 0);
  EXPECT_THAT(runner_->stdins[nft], HasSubstr("add table bridge tst"));
  EXPECT_THAT(runner_->stdins[nft], HasSubstr("oifname vmap @to_ports"));
  EXPECT_EQ(runner_->Find("sysctl"), -1);  // No NAT configured: no host-wide sysctl change.
}

TEST_F(NetworkUnitTest, SetupReturnsWhatTheVmmAndGuestNeed) {
  runner_->commands.clear();
  runner_->stdins.clear();
  VmNetworkRequest req = Req("vm-1", "alice");
  req.rx_bytes_per_sec = 1000000;
  req.tx_bytes_per_sec = 2000000;
  req.tap_owner_uid = 1234;
  auto n = net_->Setup(req);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  const std::string key = NameKey("vm-1");
  EXPECT_EQ(n->netns_name, "tst-" + key);
  EXPECT_EQ(n->netns_path, "/run/netns/tst-" + key);
  EXPECT_EQ(n->host_veth, "tstv" + key);
  EXPECT_EQ(n->tap_name, "tap0");
  EXPECT_EQ(n->mac, DeriveMac("vm-1"));
  EXPECT_EQ(n->ipv4, "10.9.0.2");
  EXPECT_EQ(n->ipv4_gateway, "10.9.0.1");
  EXPECT_EQ(n->KernelCmdlineFragment(), "metald.net=10.9.0.2/24,10.9.0.1");

  // Steps in order; the filter is in place before the port joins the bridge.
  std::vector<std::string> order = {
      "ip netns add tst-" + key,
      "ip link add name tstv" + key + " type veth peer name eth0 netns tst-" + key,
      "nft -f -",
      "ip link set dev tstv" + key + " master tst0 up",
      "ip -n tst-" + key + " tuntap add dev tap0 mode tap user 1234",
      "ip -n tst-" + key + " -batch -",
      "tc qdisc replace dev tstv" + key + " root tbf rate 8000000bit",
  };
  int at = 0;
  for (const std::string& s : order) {
    int found = runner_->Find(s, at);
    ASSERT_GE(found, at) << "missing or out of order: " << s;
    at = found + 1;
  }
  const std::string& rules = runner_->stdins[runner_->Find("nft -f -")];
  EXPECT_THAT(rules, HasSubstr("ether saddr != " + n->mac + " drop"));
  EXPECT_THAT(rules, HasSubstr("ip saddr != 10.9.0.2 drop"));
  EXPECT_THAT(rules, HasSubstr("arp saddr ip != 10.9.0.2 drop"));
  EXPECT_THAT(rules, HasSubstr("limit rate over 2000000 bytes/second"));
  EXPECT_THAT(rules, HasSubstr("\"tstv" + key + "\" : jump vm_" + key));

  auto looked = net_->Lookup("vm-1");
  ASSERT_TRUE(looked.ok());
  EXPECT_EQ(looked->ipv4, n->ipv4);
  EXPECT_EQ(looked->netns_name, n->netns_name);
}

TEST_F(NetworkUnitTest, FailedStepIsUndoneInReverseAndTheLeaseReleased) {
  runner_->commands.clear();
  runner_->stdins.clear();
  runner_->fail_substring = "tuntap add";
  auto n = net_->Setup(Req("vm-1", "alice"));
  ASSERT_FALSE(n.ok());
  EXPECT_THAT(n.status().message(), HasSubstr("Setup vm-1: step tap"));
  EXPECT_THAT(n.status().message(), HasSubstr("boom"));
  const std::string key = NameKey("vm-1");
  int failed = runner_->Find("tuntap add");
  int nft_undo = runner_->Find("nft -f -", failed);
  ASSERT_GT(nft_undo, failed);
  EXPECT_THAT(runner_->stdins[nft_undo], HasSubstr("delete chain bridge tst vm_" + key));
  int veth_undo = runner_->Find("ip link del dev tstv" + key, failed);
  int netns_undo = runner_->Find("ip netns del tst-" + key, failed);
  EXPECT_GT(veth_undo, nft_undo);
  EXPECT_GT(netns_undo, veth_undo);
  auto lease = net_->leases().Get("vm-1");
  ASSERT_TRUE(lease.ok());
  EXPECT_FALSE(lease->has_value());
  // The address is free again for the next VM (after the pool wraps; here: the only one used).
  EXPECT_EQ(net_->Lookup("vm-1").status().code(), base::StatusCode::kNotFound);
}

TEST_F(NetworkUnitTest, SetupOfAVmThatHasANetworkLeavesThatNetworkAlone) {
  ASSERT_TRUE(net_->Setup(Req("vm-1", "alice")).ok());
  runner_->commands.clear();
  auto again = net_->Setup(Req("vm-1", "alice"));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), base::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.status().message(), HasSubstr("step lease"));
  EXPECT_TRUE(runner_->commands.empty()) << runner_->commands[0];
  EXPECT_TRUE(net_->Lookup("vm-1").ok());
}

TEST_F(NetworkUnitTest, TeardownKeepsTheLeaseWhenAHostObjectCannotBeRemoved) {
  ASSERT_TRUE(net_->Setup(Req("vm-1", "alice")).ok());
  const std::string ns = "tst-" + NameKey("vm-1");
  runner_->fail_substring = "ip netns del";
  runner_->netns_list = ns + " (id: 3)\n";  // The namespace is still there after the failure.
  base::Status st = net_->Teardown("vm-1");
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("Teardown vm-1"));
  EXPECT_TRUE(net_->Lookup("vm-1").ok()) << "lease released while the namespace remains";

  runner_->netns_list.clear();
  EXPECT_TRUE(net_->Teardown("vm-1").ok());
  EXPECT_EQ(net_->Lookup("vm-1").status().code(), base::StatusCode::kNotFound);
  EXPECT_TRUE(net_->Teardown("vm-1").ok());  // Idempotent.
}

TEST(NetworkOptionsTest, RejectsBadPrefixAndMissingDb) {
  NetworkOptions o;
  o.lease_db_path = ":memory:";
  for (const char* bad : {"", "toolong", "1abc", "a-b", "ABC"}) {
    o.name_prefix = bad;
    auto n = Network::Open(o, std::make_unique<ScriptedRunner>());
    ASSERT_FALSE(n.ok()) << bad;
    EXPECT_EQ(n.status().code(), base::StatusCode::kInvalidArgument);
  }
  o.name_prefix = "ok";
  o.lease_db_path = "";
  EXPECT_FALSE(Network::Open(o, std::make_unique<ScriptedRunner>()).ok());
}

}  // namespace
}  // namespace metald::net

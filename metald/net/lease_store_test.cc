#include "metald/net/lease_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <set>

namespace metald::net {
namespace {

std::unique_ptr<LeaseStore> OpenStore(std::string cidr, std::string v6 = "",
                                      std::string path = ":memory:") {
  LeaseStoreOptions o;
  o.db_path = std::move(path);
  o.ipv4_cidr = std::move(cidr);
  o.ipv6_prefix = std::move(v6);
  o.now_unix_ns = [] { return int64_t{42}; };
  auto s = LeaseStore::Open(std::move(o));
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

TEST(LeaseStoreTest, FirstLeaseFollowsTheGateway) {
  auto s = OpenStore("10.9.0.0/24");
  EXPECT_EQ(s->ipv4_gateway(), "10.9.0.1");
  auto l = s->Allocate("vm-a", "cust-1");
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->ipv4, "10.9.0.2");
  EXPECT_EQ(l->ipv4_prefix_len, 24);
  EXPECT_EQ(l->pool, "10.9.0.0/24");
  EXPECT_EQ(l->name_key, NameKey("vm-a"));
  EXPECT_EQ(l->created_at_ns, 42);
  EXPECT_TRUE(l->ipv6.empty());
  auto got = s->Get("vm-a");
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(**got, *l);
}

TEST(LeaseStoreTest, AThousandLeasesFromASlash22AllDistinctAndUsable) {
  auto s = OpenStore("10.40.0.0/22");
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto l = s->Allocate("vm-" + std::to_string(i), "cust");
    ASSERT_TRUE(l.ok()) << i << ": " << l.status().ToString();
    EXPECT_NE(l->ipv4, "10.40.0.0");
    EXPECT_NE(l->ipv4, "10.40.0.1");
    EXPECT_NE(l->ipv4, "10.40.3.255");
    EXPECT_TRUE(seen.insert(l->ipv4).second) << "reused " << l->ipv4;
  }
  EXPECT_TRUE(seen.count("10.40.1.0"));  // Past the 253-address mark of a /24.
  auto all = s->List();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1000u);
}

TEST(LeaseStoreTest, ExhaustionIsResourceExhaustedAndReleaseFreesAnAddress) {
  auto s = OpenStore("10.9.0.0/29");  // Guests .2 - .6.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(s->Allocate("vm-" + std::to_string(i), "c").ok());
  auto full = s->Allocate("vm-5", "c");
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), base::StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("10.9.0.0/29"), std::string::npos);
  // The broadcast address .7 was never handed out.
  auto all = s->List();
  ASSERT_TRUE(all.ok());
  for (const Lease& l : *all) EXPECT_NE(l.ipv4, "10.9.0.7");

  ASSERT_TRUE(s->Release("vm-2").ok());  // Held 10.9.0.4.
  auto again = s->Allocate("vm-5", "c");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->ipv4, "10.9.0.4");
}

TEST(LeaseStoreTest, ReleasedAddressIsNotReusedBeforeThePoolWraps) {
  auto s = OpenStore("10.9.0.0/24");
  ASSERT_TRUE(s->Allocate("vm-a", "c").ok());  // .2
  ASSERT_TRUE(s->Allocate("vm-b", "c").ok());  // .3
  ASSERT_TRUE(s->Release("vm-a").ok());
  auto c = s->Allocate("vm-c", "c");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->ipv4, "10.9.0.4");  // Not the just-released .2.
}

TEST(LeaseStoreTest, NoSecondLeaseForAVmAndReleaseIsIdempotent) {
  auto s = OpenStore("10.9.0.0/24");
  ASSERT_TRUE(s->Allocate("vm-a", "c").ok());
  auto dup = s->Allocate("vm-a", "c");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), base::StatusCode::kAlreadyExists);
  EXPECT_TRUE(s->Release("vm-a").ok());
  EXPECT_TRUE(s->Release("vm-a").ok());
  auto none = s->Get("vm-a");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  EXPECT_EQ(s->Allocate("", "c").status().code(), base::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Allocate("vm-x", "").status().code(), base::StatusCode::kInvalidArgument);
}

TEST(LeaseStoreTest, CustomerTagsSharedWithinACustomerDistinctAcross) {
  auto s = OpenStore("10.9.0.0/24");
  auto a1 = s->Allocate("vm-a1", "alice");
  auto b1 = s->Allocate("vm-b1", "bob");
  auto a2 = s->Allocate("vm-a2", "alice");
  ASSERT_TRUE(a1.ok() && b1.ok() && a2.ok());
  EXPECT_EQ(a1->customer_tag, a2->customer_tag);
  EXPECT_NE(a1->customer_tag, b1->customer_tag);
  EXPECT_GE(a1->customer_tag, 1u);
  // The tag outlives one of alice's leases, and goes with her last one.
  ASSERT_TRUE(s->Release("vm-a1").ok());
  auto a3 = s->Allocate("vm-a3", "alice");
  ASSERT_TRUE(a3.ok());
  EXPECT_EQ(a3->customer_tag, a2->customer_tag);
  ASSERT_TRUE(s->Release("vm-a2").ok());
  ASSERT_TRUE(s->Release("vm-a3").ok());
  auto c = s->Allocate("vm-c1", "carol");
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->customer_tag, b1->customer_tag);
}

TEST(LeaseStoreTest, Ipv6FollowsTheHostIndex) {
  auto s = OpenStore("10.9.0.0/24", "fd6d:746c:6400::/64");
  auto l = s->Allocate("vm-a", "c");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->ipv6, "fd6d:746c:6400::2");
  ASSERT_TRUE(s->ipv6_prefix().has_value());
  EXPECT_EQ(s->ipv6_prefix()->AddressAt(1), "fd6d:746c:6400::1");
}

TEST(LeaseStoreTest, BadOptionsNameTheOption) {
  LeaseStoreOptions o;
  o.db_path = ":memory:";
  o.ipv4_cidr = "10.0.0.1/24";
  auto r = LeaseStore::Open(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("ipv4_cidr"), std::string::npos);
  o.ipv4_cidr = "10.0.0.0/24";
  o.ipv6_prefix = "fd00::/200";
  r = LeaseStore::Open(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("ipv6_prefix"), std::string::npos);
  o.ipv6_prefix = "";
  o.db_path = "";
  EXPECT_FALSE(LeaseStore::Open(o).ok());
}

TEST(LeaseStoreTest, LeasesSurviveReopen) {
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("net_lease_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string path = (dir / "net.db").string();
  {
    auto s = OpenStore("10.9.0.0/24", "", path);
    ASSERT_TRUE(s->Allocate("vm-a", "c").ok());
    ASSERT_TRUE(s->Allocate("vm-b", "c").ok());
  }
  {
    auto s = OpenStore("10.9.0.0/24", "", path);
    auto all = s->List();
    ASSERT_TRUE(all.ok());
    ASSERT_EQ(all->size(), 2u);
    auto c = s->Allocate("vm-c", "c");
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->ipv4, "10.9.0.4");  // Held addresses and the cursor were persisted.
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace metald::net

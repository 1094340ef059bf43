#include "metald/net/address.h"

#include <gtest/gtest.h>

#include <set>

#include "metald/model/vm_id.h"

namespace metald::net {
namespace {

TEST(Ipv4CidrTest, ParsesAndBoundsThePool) {
  auto c = ParseIpv4Cidr("10.213.0.0/16");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->ToString(), "10.213.0.0/16");
  EXPECT_EQ(c->size(), 65536u);
  EXPECT_EQ(FormatIpv4(c->At(Ipv4Cidr::kGatewayIndex)), "10.213.0.1");
  EXPECT_EQ(FormatIpv4(c->At(Ipv4Cidr::first_guest_index())), "10.213.0.2");
  EXPECT_EQ(FormatIpv4(c->At(c->last_guest_index())), "10.213.255.254");

  auto small = ParseIpv4Cidr("192.168.7.4/30");
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->first_guest_index(), small->last_guest_index());
  EXPECT_EQ(FormatIpv4(small->At(small->first_guest_index())), "192.168.7.6");
}

TEST(Ipv4CidrTest, RejectsMalformedAndUnusable) {
  for (const char* bad : {"", "10.0.0.0", "10.0.0.0/", "10.0.0.1/24", "10.0.0.0/31", "10.0.0.0/7",
                          "256.0.0.0/8", "10.0.0/24", "10.0.0.0.0/24", "010.0.0.0/24",
                          "10.0.0.0/024", "a.b.c.d/24", "10.0.0.0/24 "}) {
    EXPECT_FALSE(ParseIpv4Cidr(bad).ok()) << bad;
  }
  auto st = ParseIpv4Cidr("10.0.0.1/24").status();
  EXPECT_EQ(st.code(), base::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("10.0.0.0/24"), std::string::npos) << st.message();
}

TEST(Ipv4Test, RoundTrips) {
  for (const char* a : {"0.0.0.0", "1.2.3.4", "255.255.255.255", "10.213.4.1"}) {
    auto v = ParseIpv4(a);
    ASSERT_TRUE(v.ok()) << a;
    EXPECT_EQ(FormatIpv4(*v), a);
  }
}

TEST(Ipv6PrefixTest, AddressesByHostIndex) {
  auto p = ParseIpv6Prefix("fd6d:746c:6400::/64");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->ToString(), "fd6d:746c:6400::/64");
  EXPECT_EQ(p->AddressAt(1), "fd6d:746c:6400::1");
  EXPECT_EQ(p->AddressAt(0x1234), "fd6d:746c:6400::1234");
  EXPECT_EQ(p->AddressAt(0x10000), "fd6d:746c:6400::1:0");
  EXPECT_FALSE(ParseIpv6Prefix("fd00::1/64").ok());  // Host bits set.
  EXPECT_FALSE(ParseIpv6Prefix("fd00::/32").ok());   // Too short.
  EXPECT_FALSE(ParseIpv6Prefix("fd00::").ok());
  EXPECT_FALSE(ParseIpv6Prefix("10.0.0.0/64").ok());
}

TEST(MacTest, LocallyAdministeredUnicastAndDeterministic) {
  model::VmIdGenerator gen;
  std::set<std::string> macs;
  for (int i = 0; i < 5000; ++i) {
    std::string id = gen.Next();
    std::string mac = DeriveMac(id);
    ASSERT_EQ(mac.size(), 17u) << mac;
    EXPECT_EQ(mac.substr(0, 3), "02:");  // Locally administered (bit 1), unicast (bit 0 clear).
    for (size_t j = 2; j < mac.size(); j += 3) EXPECT_EQ(mac[j], ':');
    EXPECT_EQ(DeriveMac(id), mac);
    macs.insert(mac);
  }
  EXPECT_EQ(macs.size(), 5000u);  // 40 bits: a collision here would mean a broken hash.
  EXPECT_NE(DeriveMac("vm-a"), DeriveMac("vm-b"));
}

TEST(NameKeyTest, TenHexDigitsDistinctPerVm) {
  std::set<std::string> keys;
  for (int i = 0; i < 5000; ++i) {
    std::string id = "vm-" + std::to_string(i);
    std::string key = NameKey(id);
    ASSERT_EQ(key.size(), kNameKeyLength);
    for (char c : key) EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << key;
    EXPECT_EQ(NameKey(id), key);
    keys.insert(key);
  }
  EXPECT_EQ(keys.size(), 5000u);
  // The key and the MAC come from different hashes.
  EXPECT_NE(NameKey("vm-1"), DeriveMac("vm-1").substr(3, 10));
}

}  // namespace
}  // namespace metald::net

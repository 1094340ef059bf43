#include "metald/store/vm_spec_json.h"

#include <gtest/gtest.h>

namespace metald::store {
namespace {

model::VmSpec FullSpec() {
  model::VmSpec s;
  s.cpu.vcpu_count = 4;
  s.memory.size_bytes = 17179869184ull;  // above 2^32
  s.boot = {"/img/k", "/img/i", "console=ttyS0 quiet"};
  s.storage = {{"root", "/img/r.ext4", false, true}, {"d", "/img/d \"q\".img", true, false}};
  model::NetworkSpec n;
  n.id = "eth0";
  n.mac_address = "02:00:00:00:00:01";
  n.ipv4_address = "10.0.0.2/24";
  n.ipv6_address = "fd00::2/64";
  n.gateway = "10.0.0.1";
  n.rx_bytes_per_sec = 18446744073709551615ull;
  n.tx_bytes_per_sec = 5;
  s.network = {n};
  s.console = {true, "/var/log/c.log"};
  s.metadata = {{"b", "2"}, {"a", "ü"}};
  return s;
}

TEST(VmSpecJsonTest, RoundTrips) {
  const model::VmSpec s = FullSpec();
  const std::string json = VmSpecToJson(s);
  auto back = VmSpecFromJson(json);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, s);
  EXPECT_EQ(VmSpecToJson(*back), json);  // deterministic text
  EXPECT_EQ(*VmSpecFromJson(VmSpecToJson(model::VmSpec{})), model::VmSpec{});
}

TEST(VmSpecJsonTest, LenientOnUnknownAndMissingKeys) {
  auto s =
      VmSpecFromJson(R"({"cpu":{"vcpu_count":3},"future":{"x":1},"boot":{"kernel_path":"/k"}})");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->cpu.vcpu_count, 3u);
  EXPECT_EQ(s->boot.kernel_path, "/k");
  EXPECT_EQ(s->memory.size_bytes, model::MemorySpec{}.size_bytes);
}

TEST(VmSpecJsonTest, RejectsMalformed) {
  for (const char* bad : {"", "{", "[]", R"({"cpu":{"vcpu_count":"two"}})", R"({"cpu":3})",
                          R"({"storage":{}})", R"({"storage":[1]})", R"({"metadata":{"a":1}})"}) {
    auto s = VmSpecFromJson(bad);
    EXPECT_FALSE(s.ok()) << bad;
    if (!s.ok()) {
      EXPECT_EQ(s.status().code(), base::StatusCode::kInvalidArgument) << bad;
    }
  }
}

}  // namespace
}  // namespace metald::store

// Unit tests of the proto <-> model conversions (metald/api/internal/convert.h).

#include "metald/api/internal/convert.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include "metald/model/vm_id.h"
#include "metald/model/vm_state.h"

namespace metald::api::internal {
namespace {

using google::protobuf::util::MessageDifferencer;

v1::VmConfig FullConfig() {
  v1::VmConfig c;
  c.mutable_cpu()->set_vcpu_count(4);
  c.mutable_memory()->set_size_bytes(512ull << 20);
  c.mutable_boot()->set_kernel_path("/images/vmlinuz");
  c.mutable_boot()->set_initrd_path("/images/initrd");
  c.mutable_boot()->set_kernel_args("quiet loglevel=3");
  auto* root = c.add_storage();
  root->set_id("root");
  root->set_path("/images/root.ext4");
  root->set_is_root(true);
  auto* data = c.add_storage();
  data->set_id("data");
  data->set_path("/images/data.img");
  data->set_read_only(true);
  auto* eth0 = c.add_network();
  eth0->set_id("eth0");
  eth0->set_mac_address("02:00:00:00:00:01");
  eth0->set_ipv4_address("10.0.0.5/24");
  eth0->set_ipv6_address("fd00::5/64");
  eth0->set_ipv4_gateway("10.0.0.1");
  eth0->mutable_rx_rate_limit()->set_bandwidth_bytes_per_sec(1000000);
  eth0->mutable_tx_rate_limit()->set_bandwidth_bytes_per_sec(2000000);
  auto* eth1 = c.add_network();
  eth1->set_id("eth1");
  eth1->set_ipv6_address("fd01::5/64");
  eth1->set_ipv6_gateway("fd01::1");
  c.mutable_console()->set_enabled(true);
  c.mutable_console()->set_log_file("serial.log");
  (*c.mutable_metadata())["team"] = "infra";
  (*c.mutable_metadata())["env"] = "test";
  return c;
}

TEST(ConvertTest, FullConfigMapsToSpecFieldByField) {
  auto spec = VmSpecFromProto(FullConfig());
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->cpu.vcpu_count, 4u);
  EXPECT_EQ(spec->memory.size_bytes, 512ull << 20);
  EXPECT_EQ(spec->boot.kernel_path, "/images/vmlinuz");
  EXPECT_EQ(spec->boot.initrd_path, "/images/initrd");
  EXPECT_EQ(spec->boot.kernel_args, "quiet loglevel=3");
  ASSERT_EQ(spec->storage.size(), 2u);
  EXPECT_TRUE(spec->storage[0].root);
  EXPECT_FALSE(spec->storage[0].read_only);
  EXPECT_FALSE(spec->storage[1].root);
  EXPECT_TRUE(spec->storage[1].read_only);
  EXPECT_EQ(spec->storage[1].path, "/images/data.img");
  ASSERT_EQ(spec->network.size(), 2u);
  EXPECT_EQ(spec->network[0].gateway, "10.0.0.1");
  EXPECT_EQ(spec->network[0].rx_bytes_per_sec, 1000000u);
  EXPECT_EQ(spec->network[0].tx_bytes_per_sec, 2000000u);
  EXPECT_EQ(spec->network[0].mac_address, "02:00:00:00:00:01");
  EXPECT_EQ(spec->network[1].gateway, "fd01::1");
  EXPECT_TRUE(spec->console.enabled);
  EXPECT_EQ(spec->console.log_file, "serial.log");
  EXPECT_EQ(spec->metadata.at("team"), "infra");
  EXPECT_EQ(spec->metadata.size(), 2u);
}

TEST(ConvertTest, FullConfigRoundTrips) {
  const v1::VmConfig sent = FullConfig();
  auto spec = VmSpecFromProto(sent);
  ASSERT_TRUE(spec.ok());
  v1::VmConfig back;
  VmSpecToProto(*spec, &back);
  std::string diff;
  MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(sent, back)) << diff;
  auto again = VmSpecFromProto(back);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *spec);
}

TEST(ConvertTest, AbsentCpuAndMemoryKeepModelDefaults) {
  v1::VmConfig c;
  c.mutable_boot()->set_kernel_path("/k");
  auto spec = VmSpecFromProto(c);
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->cpu, model::CpuSpec{});
  EXPECT_EQ(spec->memory, model::MemorySpec{});
  // A present message is copied verbatim, so the service can reject 0 naming the field.
  c.mutable_cpu();
  spec = VmSpecFromProto(c);
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->cpu.vcpu_count, 0u);
}

TEST(ConvertTest, RejectsBothGateways) {
  v1::VmConfig c = FullConfig();
  c.mutable_network(1)->set_ipv4_gateway("10.1.0.1");
  auto spec = VmSpecFromProto(c);
  ASSERT_EQ(spec.status().code(), base::StatusCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find("network[1]"), std::string::npos);
  EXPECT_NE(spec.status().message().find("ipv4_gateway"), std::string::npos);
}

TEST(ConvertTest, RejectsGatewayOfTheWrongFamily) {
  v1::VmConfig c = FullConfig();
  c.mutable_network(0)->set_ipv4_gateway("fd00::1");
  EXPECT_EQ(VmSpecFromProto(c).status().message(),
            "network[0].ipv4_gateway must be an IPv4 address");
  c = FullConfig();
  c.mutable_network(1)->set_ipv6_gateway("10.0.0.1");
  EXPECT_EQ(VmSpecFromProto(c).status().message(),
            "network[1].ipv6_gateway must be an IPv6 address");
}

TEST(ConvertTest, RejectsOpsPerSec) {
  v1::VmConfig c = FullConfig();
  c.mutable_network(0)->mutable_rx_rate_limit()->set_ops_per_sec(10);
  auto spec = VmSpecFromProto(c);
  EXPECT_EQ(spec.status(),
            base::InvalidArgumentError("network[0].rx_rate_limit.ops_per_sec: not supported"));
  c = FullConfig();
  c.mutable_network(1)->mutable_tx_rate_limit()->set_ops_per_sec(1);
  EXPECT_EQ(VmSpecFromProto(c).status(),
            base::InvalidArgumentError("network[1].tx_rate_limit.ops_per_sec: not supported"));
}

TEST(ConvertTest, RewritesModelFieldPathsToProtoPaths) {
  const v1::VmConfig sent = FullConfig();
  EXPECT_EQ(RewriteSpecFieldPaths("storage[0].root: at most one root device", sent),
            "storage[0].is_root: at most one root device");
  EXPECT_EQ(RewriteSpecFieldPaths("network[0].gateway is not an IP address", sent),
            "network[0].ipv4_gateway is not an IP address");
  EXPECT_EQ(RewriteSpecFieldPaths("network[1].gateway is not an IP address", sent),
            "network[1].ipv6_gateway is not an IP address");
  EXPECT_EQ(RewriteSpecFieldPaths(
                "network[0].rx_bytes_per_sec too big; network[1].tx_bytes_per_sec", sent),
            "network[0].rx_rate_limit.bandwidth_bytes_per_sec too big; "
            "network[1].tx_rate_limit.bandwidth_bytes_per_sec");
  // Names the proto shares with the model stay as they are; an index beyond what was sent too.
  EXPECT_EQ(RewriteSpecFieldPaths("storage[1].path: outside image roots", sent),
            "storage[1].path: outside image roots");
  EXPECT_EQ(RewriteSpecFieldPaths("network[7].gateway bad", sent), "network[7].ipv4_gateway bad");
  EXPECT_EQ(RewriteSpecFieldPaths("cpu.vcpu_count must be between 1 and 32", sent),
            "cpu.vcpu_count must be between 1 and 32");
  EXPECT_EQ(RewriteSpecFieldPaths("storage[0].rooted", sent), "storage[0].rooted");
}

TEST(ConvertTest, EveryModelStateRoundTripsThroughProto) {
  for (model::VmState state : model::kAllVmStates) {
    v1::VmState p = VmStateToProto(state);
    EXPECT_NE(p, v1::VM_STATE_UNSPECIFIED) << model::StateName(state);
    auto back = VmStateFromProto(p, "states[0]");
    ASSERT_TRUE(back.ok()) << model::StateName(state);
    EXPECT_EQ(*back, state);
    // Names line up: VM_STATE_<model name>.
    EXPECT_EQ(v1::VmState_Name(p), "VM_STATE_" + std::string(model::StateName(state)));
  }
}

TEST(ConvertTest, UnspecifiedAndUnknownStatesAreInvalid) {
  auto s = VmStateFromProto(v1::VM_STATE_UNSPECIFIED, "state_filter[2]");
  EXPECT_EQ(s.status().code(), base::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("state_filter[2]"), std::string::npos);
  s = VmStateFromProto(99, "states[0]");
  EXPECT_EQ(s.status().code(), base::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("states[0]"), std::string::npos);
}

TEST(ConvertTest, ReasonsAndBackendsMapByName) {
  for (model::TransitionReason r : model::kAllTransitionReasons) {
    std::string want = "TRANSITION_REASON_" + std::string(model::ReasonName(r));
    for (char& c : want) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    EXPECT_EQ(v1::TransitionReason_Name(ReasonToProto(r)), want);
  }
  EXPECT_EQ(BackendToProto(model::BackendKind::kQemu), v1::BACKEND_KIND_QEMU);
  EXPECT_EQ(BackendToProto(model::BackendKind::kFirecracker), v1::BACKEND_KIND_FIRECRACKER);
  EXPECT_EQ(BackendToProto(model::BackendKind::kCloudHypervisor),
            v1::BACKEND_KIND_CLOUD_HYPERVISOR);
}

TEST(ConvertTest, TimestampsFromUnixNanoseconds) {
  google::protobuf::Timestamp t;
  TimestampFromUnixNs(1'700'000'000'123'456'789, &t);
  EXPECT_EQ(t.seconds(), 1'700'000'000);
  EXPECT_EQ(t.nanos(), 123'456'789);
  TimestampFromUnixNs(-1, &t);  // one nanosecond before the epoch
  EXPECT_EQ(t.seconds(), -1);
  EXPECT_EQ(t.nanos(), 999'999'999);
  TimestampFromUnixNs(0, &t);
  EXPECT_EQ(t.seconds(), 0);
  EXPECT_EQ(t.nanos(), 0);
}

google::protobuf::Duration Dur(int64_t seconds, int32_t nanos) {
  google::protobuf::Duration d;
  d.set_seconds(seconds);
  d.set_nanos(nanos);
  return d;
}

TEST(ConvertTest, Timeouts) {
  using std::chrono::milliseconds;
  const milliseconds def(30'000);
  EXPECT_EQ(*TimeoutFromProto(nullptr, def, "timeout"), def);
  auto zero = Dur(0, 0);
  EXPECT_EQ(*TimeoutFromProto(&zero, def, "timeout"), def);
  auto d = Dur(5, 0);
  EXPECT_EQ(*TimeoutFromProto(&d, def, "timeout"), milliseconds(5000));
  d = Dur(0, 1);  // rounded up, never to zero
  EXPECT_EQ(*TimeoutFromProto(&d, def, "timeout"), milliseconds(1));
  d = Dur(1, 500'000'001);
  EXPECT_EQ(*TimeoutFromProto(&d, def, "timeout"), milliseconds(1501));
  d = Dur(600, 0);
  EXPECT_EQ(*TimeoutFromProto(&d, def, "timeout"), milliseconds(600'000));

  for (auto bad : {Dur(-1, 0), Dur(0, -5), Dur(600, 1), Dur(3600, 0), Dur(1, -1),
                   Dur(0, 1'000'000'000), Dur(-1, 5)}) {
    auto r = TimeoutFromProto(&bad, def, "timeout");
    EXPECT_EQ(r.status().code(), base::StatusCode::kInvalidArgument) << bad.DebugString();
    EXPECT_EQ(r.status().message().rfind("timeout", 0), 0u) << r.status().message();
  }
}

TEST(ConvertTest, VmIds) {
  EXPECT_EQ(CheckVmId(""), base::InvalidArgumentError("vm_id is required"));
  EXPECT_EQ(CheckVmId("nope"), base::NotFoundError("VM nope not found"));
  EXPECT_TRUE(CheckVmId(model::VmIdGenerator().Next()).ok());
  auto long_id = CheckVmId(std::string(10'000, 'x'));
  EXPECT_EQ(long_id.code(), base::StatusCode::kNotFound);
  EXPECT_LT(long_id.message().size(), 100u);
}

TEST(ConvertTest, Cursors) {
  EXPECT_EQ(*CursorFromProto(""), std::nullopt);
  EXPECT_EQ(*CursorFromProto("0"), std::optional<int64_t>(0));
  EXPECT_EQ(*CursorFromProto(CursorToProto(9'000'000'000)), std::optional<int64_t>(9'000'000'000));
  for (const char* bad : {"-1", "+1", "abc", "12x", " 1", "99999999999999999999999"}) {
    auto r = CursorFromProto(bad);
    EXPECT_EQ(r.status().code(), base::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("cursor"), std::string::npos);
  }
}

TEST(ConvertTest, PageSizes) {
  EXPECT_EQ(PageSizeFromProto(0), 0);
  EXPECT_EQ(PageSizeFromProto(50), 50);
  EXPECT_EQ(PageSizeFromProto(1000), 1000);
  EXPECT_EQ(PageSizeFromProto(1001), 1000);
  EXPECT_EQ(PageSizeFromProto(4'000'000'000u), 1000);
}

}  // namespace
}  // namespace metald::api::internal

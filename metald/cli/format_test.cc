#include "metald/cli/format.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace metald::cli {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

TEST(ParseMemorySizeTest, Suffixes) {
  EXPECT_EQ(*ParseMemorySize("256M"), 256ull << 20);
  EXPECT_EQ(*ParseMemorySize("256m"), 256ull << 20);
  EXPECT_EQ(*ParseMemorySize("1G"), 1ull << 30);
  EXPECT_EQ(*ParseMemorySize("1GiB"), 1ull << 30);
  EXPECT_EQ(*ParseMemorySize("2gb"), 2ull << 30);
  EXPECT_EQ(*ParseMemorySize("4096K"), 4096ull << 10);
  EXPECT_EQ(*ParseMemorySize("1T"), 1ull << 40);
  EXPECT_EQ(*ParseMemorySize("512"), 512ull << 20);  // Bare number: MiB, like qemu -m.
  EXPECT_EQ(*ParseMemorySize("1048576B"), 1048576u);
}

TEST(ParseMemorySizeTest, Rejects) {
  for (const char* bad : {"", "M", "0", "0M", "-1G", "1.5G", "12X", "1Gx", "1 G", "1MiBs",
                          "99999999999999999999", "17179869184T"}) {
    auto r = ParseMemorySize(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), base::StatusCode::kInvalidArgument);
      EXPECT_THAT(r.status().message(), HasSubstr("Bad memory size"));
    }
  }
}

TEST(FormatBytesTest, Units) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(100), "100 B");
  EXPECT_EQ(FormatBytes(256ull << 20), "256 MiB");
  EXPECT_EQ(FormatBytes(3ull << 29), "1.5 GiB");
  EXPECT_EQ(FormatBytes(1ull << 40), "1 TiB");
}

TEST(ParseDurationTest, Forms) {
  EXPECT_EQ(*ParseDuration("30s"), milliseconds(30'000));
  EXPECT_EQ(*ParseDuration("500ms"), milliseconds(500));
  EXPECT_EQ(*ParseDuration("5m"), milliseconds(300'000));
  EXPECT_EQ(*ParseDuration("1h"), milliseconds(3'600'000));
  EXPECT_EQ(*ParseDuration("1m30s"), milliseconds(90'000));
  EXPECT_EQ(*ParseDuration("45"), milliseconds(45'000));
  EXPECT_EQ(*ParseDuration("0"), milliseconds(0));
  for (const char* bad : {"", "s", "10x", "1.5s", "-1s", "10s5", "5 s"}) {
    EXPECT_FALSE(ParseDuration(bad).ok()) << bad;
  }
}

TEST(ParseDiskSpecTest, PathAndOptions) {
  auto d = ParseDiskSpec("/img/root.ext4:ro:root", "disk0");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->id(), "disk0");
  EXPECT_EQ(d->path(), "/img/root.ext4");
  EXPECT_TRUE(d->read_only());
  EXPECT_TRUE(d->is_root());

  d = ParseDiskSpec("/img/data.raw", "disk1");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->path(), "/img/data.raw");
  EXPECT_FALSE(d->read_only());
  EXPECT_FALSE(d->is_root());

  d = ParseDiskSpec("rel/root.img:root:ro", "x");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->path(), "rel/root.img");
  EXPECT_TRUE(d->read_only());
  EXPECT_TRUE(d->is_root());

  // A colon inside the path is kept when what follows is not an option.
  d = ParseDiskSpec("/img/a:b/c.img:ro", "x");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->path(), "/img/a:b/c.img");
  EXPECT_TRUE(d->read_only());
}

TEST(ParseDiskSpecTest, Rejects) {
  EXPECT_THAT(ParseDiskSpec("/img/a:rw", "x").status().message(), HasSubstr("unknown option 'rw'"));
  EXPECT_THAT(ParseDiskSpec("/img/a:ro:ro", "x").status().message(),
              HasSubstr("option 'ro' given twice"));
  EXPECT_THAT(ParseDiskSpec(":ro", "x").status().message(), HasSubstr("empty path"));
  EXPECT_THAT(ParseDiskSpec("", "x").status().message(), HasSubstr("empty path"));
}

TEST(StateNameTest, ParseAndFormat) {
  EXPECT_EQ(*ParseStateName("RUNNING"), v1::VM_STATE_RUNNING);
  EXPECT_EQ(*ParseStateName("running"), v1::VM_STATE_RUNNING);
  EXPECT_EQ(*ParseStateName("VM_STATE_PAUSED"), v1::VM_STATE_PAUSED);
  EXPECT_EQ(*ParseStateName("shutting-down"), v1::VM_STATE_SHUTTING_DOWN);
  EXPECT_EQ(*ParseStateName("Shutting_Down"), v1::VM_STATE_SHUTTING_DOWN);
  auto bad = ParseStateName("sleeping");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("Unknown state 'sleeping'"));
  EXPECT_THAT(bad.status().message(), HasSubstr("RUNNING"));
  EXPECT_FALSE(ParseStateName("unspecified").ok());
  EXPECT_FALSE(ParseStateName("").ok());

  EXPECT_EQ(StateName(v1::VM_STATE_SHUTTING_DOWN), "SHUTTING_DOWN");
  EXPECT_EQ(StateName(static_cast<v1::VmState>(99)), "99");
  EXPECT_EQ(ReasonName(v1::TRANSITION_REASON_GUEST_SHUTDOWN), "guest_shutdown");
}

TEST(ParseMetadataTest, KeyValue) {
  EXPECT_EQ(*ParseMetadata("team=infra"),
            std::make_pair(std::string("team"), std::string("infra")));
  EXPECT_EQ(*ParseMetadata("k="), std::make_pair(std::string("k"), std::string()));
  EXPECT_EQ(*ParseMetadata("a=b=c"), std::make_pair(std::string("a"), std::string("b=c")));
  EXPECT_FALSE(ParseMetadata("novalue").ok());
  EXPECT_FALSE(ParseMetadata("=v").ok());
}

TEST(FormatTableTest, AlignsColumns) {
  EXPECT_EQ(FormatTable({"ID", "STATE"}, {{"vm-1", "RUNNING"}, {"vm-long-id", "STOPPED"}}),
            "ID          STATE\n"
            "vm-1        RUNNING\n"
            "vm-long-id  STOPPED\n");
  // Short rows are padded; no trailing spaces.
  EXPECT_EQ(FormatTable({"A", "B", "C"}, {{"x"}}),
            "A  B  C\n"
            "x\n");
  EXPECT_EQ(FormatTable({"ID"}, {}), "ID\n");
}

v1::VmInfo SampleVm() {
  v1::VmInfo vm;
  vm.set_vm_id("vm-abc");
  vm.set_customer_id("acme");
  vm.set_state(v1::VM_STATE_RUNNING);
  vm.set_state_reason(v1::TRANSITION_REASON_USER_REQUEST);
  vm.set_backend(v1::BACKEND_KIND_QEMU);
  vm.mutable_config()->mutable_cpu()->set_vcpu_count(2);
  vm.mutable_config()->mutable_memory()->set_size_bytes(512ull << 20);
  vm.mutable_config()->mutable_boot()->set_kernel_path("/img/vmlinuz");
  auto* disk = vm.mutable_config()->add_storage();
  disk->set_id("disk0");
  disk->set_path("/img/root.ext4");
  disk->set_read_only(true);
  disk->set_is_root(true);
  (*vm.mutable_config()->mutable_metadata())["team"] = "infra";
  auto* nic = vm.add_network();
  nic->set_id("eth0");
  nic->set_mac_address("02:00:00:00:00:01");
  nic->set_ipv4_address("10.213.0.2/16");
  vm.set_process_id(4242);
  vm.set_incarnation(1);
  vm.mutable_created_at()->set_seconds(1'700'000'000);
  return vm;
}

TEST(FormatVmTest, List) {
  v1::VmInfo other;
  other.set_vm_id("vm-2");
  other.set_state(v1::VM_STATE_CREATED);
  EXPECT_EQ(FormatVmList({SampleVm(), other}),
            "ID      STATE    VCPUS  MEMORY   IPV4           CREATED\n"
            "vm-abc  RUNNING  2      512 MiB  10.213.0.2/16  2023-11-14T22:13:20Z\n"
            "vm-2    CREATED  0      0 B      -              -\n");
  EXPECT_EQ(FormatVmList({}), "ID  STATE  VCPUS  MEMORY  IPV4  CREATED\n");
}

TEST(FormatVmTest, Detail) {
  std::string text = FormatVmDetail(SampleVm());
  EXPECT_THAT(text, HasSubstr("ID           vm-abc\n"));
  EXPECT_THAT(text, HasSubstr("STATE        RUNNING\n"));
  EXPECT_THAT(text, HasSubstr("REASON       user_request\n"));
  EXPECT_THAT(text, HasSubstr("BACKEND      qemu\n"));
  EXPECT_THAT(text, HasSubstr("MEMORY       512 MiB\n"));
  EXPECT_THAT(text, HasSubstr("DISK         disk0 /img/root.ext4 ro root\n"));
  EXPECT_THAT(text, HasSubstr("NETWORK      eth0 mac=02:00:00:00:00:01 ipv4=10.213.0.2/16\n"));
  EXPECT_THAT(text, HasSubstr("PID          4242\n"));
  EXPECT_THAT(text, HasSubstr("METADATA     team=infra\n"));
  EXPECT_THAT(text, HasSubstr("CREATED      2023-11-14T22:13:20Z\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("MESSAGE")));  // Empty fields are left out.
  EXPECT_THAT(text, ::testing::Not(HasSubstr("BOOTED")));
}

TEST(FormatVmTest, Event) {
  v1::VmEvent e;
  e.set_cursor("17");
  e.set_vm_id("vm-abc");
  e.set_from_state(v1::VM_STATE_BOOTING);
  e.set_to_state(v1::VM_STATE_RUNNING);
  e.set_reason(v1::TRANSITION_REASON_USER_REQUEST);
  e.mutable_time()->set_seconds(1'700'000'000);
  EXPECT_EQ(FormatEvent(e),
            "2023-11-14T22:13:20Z vm-abc BOOTING -> RUNNING (user_request) cursor=17");
  e.clear_from_state();
  e.set_message("VMM exited: signal 9");
  EXPECT_EQ(FormatEvent(e),
            "2023-11-14T22:13:20Z vm-abc - -> RUNNING (user_request) VMM exited: signal 9 "
            "cursor=17");
}

}  // namespace
}  // namespace metald::cli

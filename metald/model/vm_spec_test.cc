#include "metald/model/vm_spec.h"

#include <gtest/gtest.h>

namespace metald::model {
namespace {

VmSpec GoodSpec() {
  VmSpec s;
  s.cpu.vcpu_count = 2;
  s.memory.size_bytes = 256ull << 20;
  s.boot.kernel_path = "/images/vmlinuz";
  s.boot.initrd_path = "/images/initrd";
  s.boot.kernel_args = "console=ttyS0 metald.ip=10.0.0.2/24";
  s.storage = {{"root", "/images/root.ext4", false, true},
               {"data", "/images/data.img", true, false}};
  NetworkSpec n;
  n.id = "eth0";
  n.mac_address = "02:00:0A:00:00:02";
  n.ipv4_address = "10.0.0.2/24";
  n.ipv6_address = "fd00::2/64";
  n.gateway = "10.0.0.1";
  n.rx_bytes_per_sec = 1 << 20;
  s.network = {n};
  s.console = {true, "/var/log/vm.log"};
  s.metadata = {{"team", "infra"}};
  return s;
}

void ExpectInvalid(const VmSpec& s, const std::string& message) {
  base::Status st = ValidateSpec(s, SpecLimits{});
  EXPECT_EQ(st.code(), base::StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_EQ(st.message(), message);
}

TEST(VmSpecTest, GoodSpecIsValid) { EXPECT_TRUE(ValidateSpec(GoodSpec(), SpecLimits{}).ok()); }

TEST(VmSpecTest, MinimalSpecIsValid) {
  VmSpec s;
  s.boot.kernel_path = "/k";
  EXPECT_TRUE(ValidateSpec(s, SpecLimits{}).ok());
}

TEST(VmSpecTest, VcpuBounds) {
  VmSpec s = GoodSpec();
  s.cpu.vcpu_count = 0;
  ExpectInvalid(s, "cpu.vcpu_count must be between 1 and 32");
  s.cpu.vcpu_count = 33;
  ExpectInvalid(s, "cpu.vcpu_count must be between 1 and 32");
  s.cpu.vcpu_count = 32;
  EXPECT_TRUE(ValidateSpec(s, SpecLimits{}).ok());
  SpecLimits limits;
  limits.max_vcpus = 4;
  s.cpu.vcpu_count = 5;
  EXPECT_EQ(ValidateSpec(s, limits).message(), "cpu.vcpu_count must be between 1 and 4");
}

TEST(VmSpecTest, MemoryBoundsAndAlignment) {
  VmSpec s = GoodSpec();
  s.memory.size_bytes = 1 << 20;
  ExpectInvalid(s, "memory.size_bytes must be between 16777216 and 68719476736");
  s.memory.size_bytes = (65ull << 30);
  ExpectInvalid(s, "memory.size_bytes must be between 16777216 and 68719476736");
  s.memory.size_bytes = (64ull << 20) + 4096;
  ExpectInvalid(s, "memory.size_bytes must be a multiple of 1048576");
}

TEST(VmSpecTest, BootFields) {
  VmSpec s = GoodSpec();
  s.boot.kernel_path.clear();
  ExpectInvalid(s, "boot.kernel_path is required");
  s = GoodSpec();
  s.boot.initrd_path = std::string("/a\nb");
  ExpectInvalid(s, "boot.initrd_path must not contain control characters");
  s = GoodSpec();
  s.boot.kernel_args = std::string(3000, 'x');
  ExpectInvalid(s, "boot.kernel_args must be at most 2048 bytes");
  s.boot.kernel_args = "a\nb";
  ExpectInvalid(s, "boot.kernel_args must not contain control characters");
}

TEST(VmSpecTest, StorageIdsUniqueAndOneRoot) {
  VmSpec s = GoodSpec();
  s.storage[1].id = "root";
  ExpectInvalid(s, "storage[1].id duplicates \"root\"");
  s = GoodSpec();
  s.storage[1].root = true;
  ExpectInvalid(s, "storage[1].root is set on more than one device");
  s = GoodSpec();
  s.storage[0].id = "bad id";
  ExpectInvalid(s, "storage[0].id must be 1 to 64 characters of letters, digits, '_' or '-'");
  s = GoodSpec();
  s.storage[1].path.clear();
  ExpectInvalid(s, "storage[1].path is required");
  s = GoodSpec();
  s.storage.resize(17, StorageSpec{"x", "/p", false, false});
  ExpectInvalid(s, "storage must have at most 16 devices");
}

TEST(VmSpecTest, NetworkFields) {
  VmSpec s = GoodSpec();
  s.network[0].mac_address = "03:00:00:00:00:01";
  ExpectInvalid(s, "network[0].mac_address must be a unicast MAC address like 02:00:00:00:00:01");
  s = GoodSpec();
  s.network[0].ipv4_address = "10.0.0.2";
  ExpectInvalid(s,
                "network[0].ipv4_address must be an IPv4 address with prefix length like "
                "10.0.0.2/24");
  s = GoodSpec();
  s.network[0].ipv6_address = "fd00::zz/64";
  ExpectInvalid(s,
                "network[0].ipv6_address must be an IPv6 address with prefix length like "
                "fd00::2/64");
  s = GoodSpec();
  s.network[0].gateway = "10.0.1.1";
  ExpectInvalid(s, "network[0].gateway must be inside the subnet of ipv4_address");
  s.network[0].gateway = "10.0.0.2";
  ExpectInvalid(s, "network[0].gateway must differ from ipv4_address");
  s.network[0].gateway = "gw";
  ExpectInvalid(s, "network[0].gateway must be an IPv4 or IPv6 address");
  s.network[0].gateway = "fd00::1";
  EXPECT_TRUE(ValidateSpec(s, SpecLimits{}).ok());
  s.network[0].ipv6_address.clear();
  ExpectInvalid(s, "network[0].gateway is an IPv6 address but ipv6_address is not set");

  s = GoodSpec();
  s.network.push_back(s.network[0]);
  s.network[1].mac_address = "02:00:0a:00:00:03";
  ExpectInvalid(s, "network[1].id duplicates \"eth0\"");
  s.network[1].id = "eth1";
  s.network[1].mac_address = "02:00:0a:00:00:02";  // same as [0] modulo case
  ExpectInvalid(s, "network[1].mac_address duplicates another interface's");
  s.network[1].mac_address.clear();  // service assigns one
  EXPECT_TRUE(ValidateSpec(s, SpecLimits{}).ok());
}

TEST(VmSpecTest, Metadata) {
  VmSpec s = GoodSpec();
  s.metadata[""] = "x";
  ExpectInvalid(s, "metadata keys must be 1 to 128 bytes");
  s = GoodSpec();
  s.metadata["k"] = std::string(1025, 'v');
  ExpectInvalid(s, "metadata[k] must be at most 1024 bytes");
  s = GoodSpec();
  for (int i = 0; i < 65; ++i) s.metadata["k" + std::to_string(i)] = "v";
  ExpectInvalid(s, "metadata must have at most 64 entries");
}

TEST(VmSpecTest, MacShapes) {
  EXPECT_TRUE(IsValidMac("02:00:00:00:00:01"));
  EXPECT_TRUE(IsValidMac("AA:bb:CC:dd:EE:ff"));
  EXPECT_FALSE(IsValidMac("00:00:00:00:00:00"));
  EXPECT_FALSE(IsValidMac("ff:ff:ff:ff:ff:ff"));
  EXPECT_FALSE(IsValidMac("02-00-00-00-00-01"));
  EXPECT_FALSE(IsValidMac("02:00:00:00:00:0"));
  EXPECT_FALSE(IsValidMac("02:00:00:00:00:0g"));
  EXPECT_FALSE(IsValidMac("02:00:00:00:00:011"));
}

TEST(VmSpecTest, CidrShapes) {
  EXPECT_TRUE(IsValidIpv4Cidr("10.0.0.2/24"));
  EXPECT_TRUE(IsValidIpv4Cidr("0.0.0.0/0"));
  EXPECT_TRUE(IsValidIpv4Cidr("255.255.255.255/32"));
  EXPECT_FALSE(IsValidIpv4Cidr("10.0.0.2/33"));
  EXPECT_FALSE(IsValidIpv4Cidr("10.0.0.256/24"));
  EXPECT_FALSE(IsValidIpv4Cidr("10.0.0/24"));
  EXPECT_FALSE(IsValidIpv4Cidr("10.0.0.01/24"));
  EXPECT_FALSE(IsValidIpv4Cidr("10.0.0.1/024"));
  EXPECT_FALSE(IsValidIpv4Cidr("10.0.0.1/"));
  EXPECT_FALSE(IsValidIpv4Cidr(" 10.0.0.1/8"));
  EXPECT_TRUE(IsValidIpv6Cidr("fd00::2/64"));
  EXPECT_TRUE(IsValidIpv6Cidr("::/0"));
  EXPECT_FALSE(IsValidIpv6Cidr("fd00::2/129"));
  EXPECT_FALSE(IsValidIpv6Cidr("fd00::2"));
  EXPECT_FALSE(IsValidIpv6Cidr("10.0.0.1/24"));
  EXPECT_TRUE(IsValidIpAddress("192.168.1.1"));
  EXPECT_TRUE(IsValidIpAddress("::1"));
  EXPECT_FALSE(IsValidIpAddress("localhost"));
}

}  // namespace
}  // namespace metald::model

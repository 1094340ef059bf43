#include "bench/vm_info_fixture.h"

namespace metald::bench {
namespace {

void SetTime(google::protobuf::Timestamp* t, int64_t seconds, int32_t nanos) {
  t->set_seconds(seconds);
  t->set_nanos(nanos);
}

void AddNic(v1::VmConfig& config, v1::VmInfo& info, const std::string& id, const std::string& mac,
            const std::string& ipv4, const std::string& ipv6, const std::string& tap) {
  v1::NetworkInterface* nic = config.add_network();
  nic->set_id(id);
  nic->set_mac_address(mac);
  nic->set_ipv4_address(ipv4 + "/24");
  nic->set_ipv6_address(ipv6 + "/64");
  nic->set_ipv4_gateway("10.20.0.1");
  nic->set_ipv6_gateway("fd00:20::1");
  nic->mutable_rx_rate_limit()->set_bandwidth_bytes_per_sec(125'000'000);
  nic->mutable_tx_rate_limit()->set_bandwidth_bytes_per_sec(125'000'000);
  nic->mutable_tx_rate_limit()->set_ops_per_sec(20'000);
  v1::NetworkStatus* status = info.add_network();
  status->set_id(id);
  status->set_mac_address(mac);
  status->set_ipv4_address(ipv4);
  status->set_ipv6_address(ipv6);
  status->set_tap_device(tap);
}

}  // namespace

v1::GetVmInfoResponse MakeBenchVmInfoResponse() {
  v1::GetVmInfoResponse response;
  v1::VmInfo& info = *response.mutable_vm();
  const std::string vm_dir = std::string("/var/lib/metald/vms/") + kBenchVmId;
  info.set_vm_id(kBenchVmId);
  info.set_customer_id("cust-2b8e5f1a");
  info.set_state(v1::VM_STATE_RUNNING);
  info.set_backend(v1::BACKEND_KIND_FIRECRACKER);
  info.set_state_reason(v1::TRANSITION_REASON_USER_REQUEST);
  info.set_process_id(48213);
  info.set_incarnation(3);
  SetTime(info.mutable_created_at(), 1717000000, 123456000);
  SetTime(info.mutable_updated_at(), 1717000420, 987654000);
  SetTime(info.mutable_booted_at(), 1717000400, 555000000);

  v1::VmConfig& config = *info.mutable_config();
  config.mutable_cpu()->set_vcpu_count(2);
  config.mutable_memory()->set_size_bytes(1ull << 30);
  config.mutable_boot()->set_kernel_path("/var/lib/metald/images/vmlinux-6.1.0-18-cloud-amd64");
  config.mutable_boot()->set_initrd_path("/var/lib/metald/images/initrd.img-6.1.0-18-cloud-amd64");
  config.mutable_boot()->set_kernel_args("panic=1 quiet");
  v1::StorageDevice* root = config.add_storage();
  root->set_id("rootfs");
  root->set_path(vm_dir + "/rootfs.ext4");
  root->set_is_root(true);
  v1::StorageDevice* data = config.add_storage();
  data->set_id("data");
  data->set_path(vm_dir + "/data.ext4");
  AddNic(config, info, "eth0", "02:7f:3c:9a:2e:4b", "10.20.0.5", "fd00:20::5", "mtap7f3c9a0");
  AddNic(config, info, "eth1", "02:7f:3c:9a:2e:4c", "10.20.1.5", "fd00:21::5", "mtap7f3c9a1");
  config.mutable_console()->set_enabled(true);
  config.mutable_console()->set_log_file("console.log");
  auto& metadata = *config.mutable_metadata();
  metadata["app"] = "billing-worker";
  metadata["env"] = "production";
  metadata["owner"] = "team-payments";
  metadata["region"] = "eu-west-1";
  metadata["image"] = "debian-12-slim";
  metadata["created-by"] = "deploy-bot";
  return response;
}

}  // namespace metald::bench

#include "metald/observe/rpc_metrics.h"

#include <gtest/gtest.h>

#include "metald/observe/testing/prometheus_text.h"

namespace metald::observe {
namespace {

TEST(MethodLabelTest, SnakeCasesTheMethodName) {
  EXPECT_EQ(MethodLabel("BootVm"), "boot_vm");
  EXPECT_EQ(MethodLabel("/metald.v1.VmService/BootVm"), "boot_vm");
  EXPECT_EQ(MethodLabel("/grpc.health.v1.Health/Check"), "check");
  EXPECT_EQ(MethodLabel("GetVMInfo"), "get_vm_info");
  EXPECT_EQ(MethodLabel("ListVMs"), "list_vms");
  EXPECT_EQ(MethodLabel("SendMetricsBatch"), "send_metrics_batch");
  EXPECT_EQ(MethodLabel("Http2Ping"), "http2_ping");
  EXPECT_EQ(MethodLabel("already_snake"), "already_snake");
  EXPECT_EQ(MethodLabel("X"), "x");
  EXPECT_EQ(MethodLabel(""), "unknown");
  EXPECT_EQ(MethodLabel("/svc/"), "unknown");
  EXPECT_EQ(MethodLabel("Weird-Name!"), "weird_name");
}

TEST(RpcMetricsTest, CountsTimesAndTracksInFlight) {
  MetricsRegistry registry;
  auto rpc = RpcMetrics::Create(registry);
  ASSERT_TRUE(rpc.ok()) << rpc.status().ToString();
  const std::string boot = "/metald.v1.VmService/BootVm";
  (*rpc)->OnStart(boot);
  (*rpc)->OnStart(boot);
  (*rpc)->OnStart("/metald.v1.VmService/GetVmInfo");
  (*rpc)->OnComplete(boot, base::StatusCode::kOk, std::chrono::milliseconds(20));
  (*rpc)->OnComplete("/metald.v1.VmService/GetVmInfo", base::StatusCode::kNotFound,
                     std::chrono::microseconds(500));

  auto e = testing::ParsePrometheusText(registry.RenderPrometheusText());
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->type["metald_rpc_requests_total"], "counter");
  EXPECT_EQ(e->type["metald_rpc_request_duration_seconds"], "histogram");
  EXPECT_EQ(e->type["metald_rpc_in_flight"], "gauge");
  EXPECT_EQ(e->Value("metald_rpc_requests_total", {{"method", "boot_vm"}, {"code", "ok"}}), 1);
  EXPECT_EQ(
      e->Value("metald_rpc_requests_total", {{"method", "get_vm_info"}, {"code", "not_found"}}), 1);
  EXPECT_EQ(e->Value("metald_rpc_in_flight", {{"method", "boot_vm"}}), 1);
  EXPECT_EQ(e->Value("metald_rpc_in_flight", {{"method", "get_vm_info"}}), 0);
  EXPECT_EQ(e->Value("metald_rpc_request_duration_seconds_count", {{"method", "boot_vm"}}), 1);
  EXPECT_DOUBLE_EQ(*e->Value("metald_rpc_request_duration_seconds_sum", {{"method", "boot_vm"}}),
                   0.02);
  EXPECT_EQ(e->Value("metald_rpc_request_duration_seconds_bucket",
                     {{"method", "boot_vm"}, {"le", "0.01"}}),
            0);
  EXPECT_EQ(e->Value("metald_rpc_request_duration_seconds_bucket",
                     {{"method", "boot_vm"}, {"le", "0.025"}}),
            1);
  EXPECT_EQ(e->Value("metald_rpc_request_duration_seconds_bucket",
                     {{"method", "get_vm_info"}, {"le", "0.001"}}),
            1);
  // One metric name per quantity: no per-method metric names.
  for (const auto& [name, type] : e->type) EXPECT_EQ(name.find("boot_vm"), std::string::npos);
}

TEST(RpcMetricsTest, PrefixAndIdempotentCreate) {
  MetricsRegistry registry;
  auto a = RpcMetrics::Create(registry, {.prefix = "billaged_rpc"});
  auto b = RpcMetrics::Create(registry, {.prefix = "billaged_rpc"});
  ASSERT_TRUE(a.ok() && b.ok());
  (*a)->OnStart("SendHeartbeat");
  (*b)->OnComplete("SendHeartbeat", base::StatusCode::kUnavailable, std::chrono::seconds(1));
  auto e = testing::ParsePrometheusText(registry.RenderPrometheusText());
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->Value("billaged_rpc_requests_total",
                     {{"method", "send_heartbeat"}, {"code", "unavailable"}}),
            1);
  EXPECT_EQ(e->Value("billaged_rpc_in_flight", {{"method", "send_heartbeat"}}), 0);
  EXPECT_EQ(RpcMetrics::Create(registry, {.prefix = "bad-prefix"}).status().code(),
            base::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace metald::observe

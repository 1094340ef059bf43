#include "metald/observe/export/rpc_observability.h"

#include <gtest/gtest.h>

#include "metald/observe/testing/log_capture.h"
#include "metald/observe/testing/prometheus_text.h"

namespace metald::observe {
namespace {

rpc::MethodDesc BootVmDesc() {
  rpc::MethodDesc d;
  d.service = "metald.v1.VmService";
  d.method = "BootVm";
  d.path = "/metald.v1.VmService/BootVm";
  return d;
}

rpc::CallContext MakeCall(const rpc::MethodDesc& desc, rpc::Metadata headers) {
  return rpc::CallContext(desc, rpc::Protocol::kConnect, rpc::Codec::kJson, std::move(headers),
                          "127.0.0.1:5000", std::nullopt, std::make_shared<rpc::CancelToken>());
}

class ObservabilityInterceptorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto obs = ObservabilityInterceptor::Create(
        registry_, tracer_, {.logger = Logger({.level = Level::kDebug, .sink = logs_})});
    ASSERT_TRUE(obs.ok()) << obs.status().ToString();
    interceptor_ = *obs;
  }

  MetricsRegistry registry_;
  std::shared_ptr<InMemorySpanExporter> spans_ = std::make_shared<InMemorySpanExporter>();
  Tracer tracer_{{.exporter = spans_}};
  std::shared_ptr<testing::CapturingLogSink> logs_ = std::make_shared<testing::CapturingLogSink>();
  std::shared_ptr<ObservabilityInterceptor> interceptor_;
};

TEST_F(ObservabilityInterceptorTest, ContinuesTheTraceCountsAndLogs) {
  const rpc::MethodDesc desc = BootVmDesc();
  rpc::CallContext call =
      MakeCall(desc, {{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
                      {"baggage", "tenant=acme"},
                      {"baggage", "region=eu%201"}});
  ASSERT_TRUE(interceptor_->OnRequest(call).ok());

  const TraceContext* tc = call.GetValue<TraceContext>();
  ASSERT_NE(tc, nullptr);
  EXPECT_EQ(tc->trace_id.ToHex(), "4bf92f3577b34da6a3ce929d0e0e4736");
  const Baggage* baggage = call.GetValue<Baggage>();
  ASSERT_NE(baggage, nullptr);
  EXPECT_EQ(baggage->Get("tenant"), "acme");
  EXPECT_EQ(baggage->Get("region"), "eu 1");

  auto mid = testing::ParsePrometheusText(registry_.RenderPrometheusText());
  ASSERT_TRUE(mid.ok());
  EXPECT_EQ(mid->Value("metald_rpc_in_flight", {{"method", "boot_vm"}}), 1);

  interceptor_->OnComplete(call, base::UnavailableError("Backend down"),
                           std::chrono::milliseconds(30));

  auto e = testing::ParsePrometheusText(registry_.RenderPrometheusText());
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->Value("metald_rpc_in_flight", {{"method", "boot_vm"}}), 0);
  EXPECT_EQ(e->Value("metald_rpc_requests_total", {{"method", "boot_vm"}, {"code", "unavailable"}}),
            1);
  EXPECT_EQ(e->Value("metald_rpc_request_duration_seconds_count", {{"method", "boot_vm"}}), 1);

  auto span = spans_->Find("metald.v1.VmService/BootVm");
  ASSERT_TRUE(span.has_value());
  EXPECT_EQ(span->kind, SpanKind::kServer);
  EXPECT_EQ(span->context.span_id, tc->span_id);
  EXPECT_EQ(span->parent_span_id.ToHex(), "00f067aa0ba902b7");
  EXPECT_EQ(span->status, SpanStatusCode::kError);
  EXPECT_EQ(span->status_message, "unavailable: Backend down");

  auto log = logs_->Find("RPC failed");
  ASSERT_TRUE(log.has_value());
  EXPECT_EQ(log->level, Level::kWarn);
  EXPECT_EQ(log->Get("code"), "unavailable");
  EXPECT_EQ(log->Get("trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
}

TEST_F(ObservabilityInterceptorTest, ClientErrorsAreNotSpanErrorsAndBadHeadersAreIgnored) {
  const rpc::MethodDesc desc = BootVmDesc();
  rpc::CallContext call =
      MakeCall(desc, {{"traceparent", "garbage"}, {"baggage", "no equals sign"}});
  ASSERT_TRUE(interceptor_->OnRequest(call).ok());
  EXPECT_EQ(call.GetValue<Baggage>(), nullptr);
  ASSERT_NE(call.GetValue<TraceContext>(), nullptr);
  EXPECT_TRUE(call.GetValue<TraceContext>()->valid()) << "a new trace was started";
  interceptor_->OnComplete(call, base::NotFoundError("No such VM"), std::chrono::milliseconds(1));
  auto span = spans_->Find("metald.v1.VmService/BootVm");
  ASSERT_TRUE(span.has_value());
  EXPECT_FALSE(span->parent_span_id.valid());
  EXPECT_EQ(span->status, SpanStatusCode::kUnset);
  auto log = logs_->Find("RPC failed");
  ASSERT_TRUE(log.has_value());
  EXPECT_EQ(log->level, Level::kInfo);
}

TEST(MetricsRouteTest, ServesTheRegistry) {
  MetricsRegistry registry;
  auto c = registry.AddCounter("metald_test_total", "Test.");
  ASSERT_TRUE(c.ok());
  c->WithLabels().Increment(5);
  rpc::Router router;
  ASSERT_TRUE(AddMetricsRoute(router, registry).ok());
  EXPECT_FALSE(AddMetricsRoute(router, registry).ok()) << "duplicate route";
  const rpc::HttpHandler* handler = router.FindHttpRoute("/metrics");
  ASSERT_NE(handler, nullptr);
  rpc::HttpRequest request;
  request.method = "GET";
  request.path = "/metrics";
  rpc::HttpResponse r = (*handler)(request);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, kPrometheusContentType);
  auto e = testing::ParsePrometheusText(r.body);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->Value("metald_test_total"), 5);
}

}  // namespace
}  // namespace metald::observe

#pragma once
// Glue between metald/observe and the rpc server (this folder is style.md layer 3, so it may use
// metald/rpc): one interceptor that counts, times and traces every RPC, and the GET /metrics
// route. The daemon (and billaged) install both on their Router:
//
//   auto obs = ObservabilityInterceptor::Create(registry, tracer, {});
//   router.AddInterceptor(*obs);
//   RETURN_IF_ERROR(AddMetricsRoute(router, registry));
//
// Handlers find the call's trace context with ctx.GetValue<observe::TraceContext>() (to parent
// their own spans) and the incoming W3C baggage with ctx.GetValue<observe::Baggage>().
// Thread-safety: the interceptor is stateless per call and safe for concurrent calls.

#include <memory>
#include <string>

#include "metald/base/status.h"
#include "metald/observe/log.h"
#include "metald/observe/metrics.h"
#include "metald/observe/rpc_metrics.h"
#include "metald/observe/trace.h"
#include "metald/rpc/call.h"
#include "metald/rpc/router.h"

namespace metald::observe {

struct ObservabilityInterceptorOptions {
  // RPC metric names and buckets. Default: metald_rpc_*.
  RpcMetricsOptions metrics = {};
  // Logger for one line per failed call (level kWarn for server-side codes such as internal or
  // unavailable, kInfo for client errors). Default: DefaultLogger(). Successful calls are logged
  // at kDebug.
  std::optional<Logger> logger = std::nullopt;
};

class ObservabilityInterceptor : public rpc::Interceptor {
 public:
  // Registers the RPC metrics in `registry`. REQUIRES: registry and tracer outlive the
  // interceptor.
  static base::Result<std::shared_ptr<ObservabilityInterceptor>> Create(
      MetricsRegistry& registry, const Tracer& tracer, ObservabilityInterceptorOptions options);

  // Starts the server span (continuing `traceparent` when valid), attaches the TraceContext and
  // Baggage to the call and counts the call in flight. Never fails the call.
  base::Status OnRequest(rpc::CallContext& ctx) override;
  // Ends the span with the call's status, records count and latency, logs the outcome.
  void OnComplete(const rpc::CallContext& ctx, const base::Status& status,
                  std::chrono::nanoseconds elapsed) override;

 private:
  ObservabilityInterceptor(std::unique_ptr<RpcMetrics> metrics, const Tracer& tracer, Logger logger)
      : metrics_(std::move(metrics)), tracer_(tracer), logger_(std::move(logger)) {}

  // Constant after construction.
  const std::unique_ptr<RpcMetrics> metrics_;
  const Tracer& tracer_;
  const Logger logger_;
};

// Serves `registry` in the Prometheus text format at GET `path` (default "/metrics").
// REQUIRES: registry outlives the router. Errors: those of Router::AddHttpRoute.
base::Status AddMetricsRoute(rpc::Router& router, const MetricsRegistry& registry,
                             std::string path = "/metrics");

}  // namespace metald::observe

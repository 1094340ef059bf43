#pragma once
// RpcMetrics: the standard per-RPC metric set, fed from the one dispatch wrapper / interceptor
// that sees every call (style.md rule 4):
//   <prefix>_requests_total{method,code}          counter, one per finished call
//   <prefix>_request_duration_seconds{method}     histogram of call latency
//   <prefix>_in_flight{method}                    gauge of calls started and not finished
// with prefix "metald_rpc" by default, method = MethodLabel(...) ("boot_vm") and code = the
// Connect code name ("ok", "not_found", ...). One metric name per quantity, the method as a label.
// Thread-safety: all methods may be called concurrently from any thread.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "metald/base/status.h"
#include "metald/observe/metrics.h"

namespace metald::observe {

// The metric label for an RPC: the last path segment, CamelCase to snake_case, acronym runs kept
// together: "/metald.v1.VmService/BootVm" -> "boot_vm", "GetVMInfo" -> "get_vm_info",
// "ListVMs" -> "list_vms", "Check" -> "check". Empty input gives "unknown".
std::string MethodLabel(std::string_view method_or_path);

struct RpcMetricsOptions {
  // Metric name prefix. Default: "metald_rpc" (billaged uses "billaged_rpc").
  std::string prefix = "metald_rpc";
  // Histogram buckets in seconds. Default: DefaultLatencyBuckets().
  std::vector<double> duration_buckets = DefaultLatencyBuckets();
};

class RpcMetrics {
 public:
  // Registers the three families in `registry` (idempotent for identical options).
  // REQUIRES: registry outlives the returned object.
  static base::Result<std::unique_ptr<RpcMetrics>> Create(MetricsRegistry& registry,
                                                          RpcMetricsOptions options = {});

  // A call to `method` (name or full path) started.
  void OnStart(std::string_view method) const;
  // The call ended with `code` after `elapsed`. REQUIRES: paired with one earlier OnStart.
  void OnComplete(std::string_view method, base::StatusCode code,
                  std::chrono::nanoseconds elapsed) const;

  CounterFamily requests() const { return requests_; }
  HistogramFamily duration() const { return duration_; }
  GaugeFamily in_flight() const { return in_flight_; }

 private:
  RpcMetrics(CounterFamily requests, HistogramFamily duration, GaugeFamily in_flight)
      : requests_(std::move(requests)),
        duration_(std::move(duration)),
        in_flight_(std::move(in_flight)) {}

  // Constant after construction.
  const CounterFamily requests_;
  const HistogramFamily duration_;
  const GaugeFamily in_flight_;
};

}  // namespace metald::observe

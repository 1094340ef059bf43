#include "metald/observe/rpc_metrics.h"

namespace metald::observe {
namespace {

bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsLower(char c) { return c >= 'a' && c <= 'z'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

std::string MethodLabel(std::string_view method) {
  if (const size_t slash = method.rfind('/'); slash != std::string_view::npos) {
    method.remove_prefix(slash + 1);
  }
  std::string out;
  out.reserve(method.size() + 4);
  for (size_t i = 0; i < method.size(); ++i) {
    const char c = method[i];
    if (IsUpper(c)) {
      // A word starts at an upper-case letter that follows a lower-case letter or digit, or
      // that ends an acronym run ("VMInfo": the 'I' starts "info") unless the lower-case part
      // is a plural 's' ("ListVMs" -> "list_vms").
      const bool after_lower = i > 0 && (IsLower(method[i - 1]) || IsDigit(method[i - 1]));
      const bool plural_s = i + 1 < method.size() && method[i + 1] == 's' &&
                            (i + 2 == method.size() || !IsLower(method[i + 2]));
      const bool ends_acronym = i > 0 && IsUpper(method[i - 1]) && i + 1 < method.size() &&
                                IsLower(method[i + 1]) && !plural_s;
      if ((after_lower || ends_acronym) && !out.empty() && out.back() != '_') out.push_back('_');
      out.push_back(static_cast<char>(c - 'A' + 'a'));
    } else if (IsLower(c) || IsDigit(c)) {
      out.push_back(c);
    } else if (!out.empty() && out.back() != '_') {
      out.push_back('_');  // '.', '-', '_' and anything else separate words
    }
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  return out.empty() ? "unknown" : out;
}

base::Result<std::unique_ptr<RpcMetrics>> RpcMetrics::Create(MetricsRegistry& registry,
                                                             RpcMetricsOptions options) {
  ASSIGN_OR_RETURN(
      auto requests,
      registry.AddCounter(options.prefix + "_requests_total",
                          "RPCs finished, by method and Connect status code.", {"method", "code"}));
  ASSIGN_OR_RETURN(auto duration,
                   registry.AddHistogram(options.prefix + "_request_duration_seconds",
                                         "RPC latency from request to final status, in seconds.",
                                         {"method"}, options.duration_buckets));
  ASSIGN_OR_RETURN(auto in_flight,
                   registry.AddGauge(options.prefix + "_in_flight",
                                     "RPCs started and not yet finished.", {"method"}));
  return std::unique_ptr<RpcMetrics>(
      new RpcMetrics(std::move(requests), std::move(duration), std::move(in_flight)));
}

void RpcMetrics::OnStart(std::string_view method) const {
  const std::string label = MethodLabel(method);
  in_flight_.WithLabels({label}).Increment();
}

void RpcMetrics::OnComplete(std::string_view method, base::StatusCode code,
                            std::chrono::nanoseconds elapsed) const {
  const std::string label = MethodLabel(method);
  in_flight_.WithLabels({label}).Decrement();
  requests_.WithLabels({label, base::StatusCodeName(code)}).Increment();
  duration_.WithLabels({label}).ObserveDuration(elapsed);
}

}  // namespace metald::observe

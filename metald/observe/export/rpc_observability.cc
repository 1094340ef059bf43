#include "metald/observe/export/rpc_observability.h"

#include <mutex>
#include <optional>

namespace metald::observe {
namespace {

// The span of one call, kept on the CallContext between OnRequest and OnComplete. CallContext
// values are const; the span is mutable behind a mutex because OnComplete may run on another
// thread than OnRequest.
struct CallSpan {
  mutable std::mutex mutex;
  mutable std::optional<Span> span;  // set in OnRequest
};

bool IsServerFault(base::StatusCode code) {
  switch (code) {
    case base::StatusCode::kUnknown:
    case base::StatusCode::kDeadlineExceeded:
    case base::StatusCode::kUnimplemented:
    case base::StatusCode::kInternal:
    case base::StatusCode::kUnavailable:
    case base::StatusCode::kDataLoss:
      return true;
    default:
      return false;
  }
}

}  // namespace

base::Result<std::shared_ptr<ObservabilityInterceptor>> ObservabilityInterceptor::Create(
    MetricsRegistry& registry, const Tracer& tracer, ObservabilityInterceptorOptions options) {
  ASSIGN_OR_RETURN(auto metrics, RpcMetrics::Create(registry, std::move(options.metrics)));
  Logger logger = options.logger ? *options.logger : DefaultLogger();
  return std::shared_ptr<ObservabilityInterceptor>(
      new ObservabilityInterceptor(std::move(metrics), tracer, std::move(logger)));
}

base::Status ObservabilityInterceptor::OnRequest(rpc::CallContext& ctx) {
  const rpc::MethodDesc& m = ctx.method();
  metrics_->OnStart(m.path);
  const auto traceparent = ctx.request_headers().Get("traceparent");
  Span span = tracer_.StartServerSpan(m.path.empty() ? m.method : m.path.substr(1),
                                      traceparent.value_or(""));
  span.SetAttribute("rpc.system", std::string(rpc::ProtocolName(ctx.protocol())));
  span.SetAttribute("rpc.service", m.service);
  span.SetAttribute("rpc.method", m.method);
  span.SetAttribute("net.peer.name", ctx.peer());
  ctx.SetValue(std::make_shared<const TraceContext>(span.context()));

  std::vector<std::string_view> baggage_headers = ctx.request_headers().GetAll("baggage");
  if (!baggage_headers.empty()) {
    std::string joined;
    for (std::string_view h : baggage_headers) {
      if (!joined.empty()) joined.push_back(',');
      joined.append(h);
    }
    // Malformed baggage is dropped, never an error for the call (W3C: do not fail the request).
    if (auto baggage = ParseBaggage(joined); baggage.ok()) {
      ctx.SetValue(std::make_shared<const Baggage>(std::move(baggage).value()));
    }
  }
  auto holder = std::make_shared<CallSpan>();
  holder->span.emplace(std::move(span));
  ctx.SetValue(std::shared_ptr<const CallSpan>(std::move(holder)));
  return base::OkStatus();
}

void ObservabilityInterceptor::OnComplete(const rpc::CallContext& ctx, const base::Status& status,
                                          std::chrono::nanoseconds elapsed) {
  const rpc::MethodDesc& m = ctx.method();
  metrics_->OnComplete(m.path, status.code(), elapsed);
  std::string trace_id;
  if (const CallSpan* call = ctx.GetValue<CallSpan>(); call != nullptr && call->span) {
    std::lock_guard lock(call->mutex);
    call->span->SetAttribute("rpc.connect_rpc.error_code",
                             std::string(base::StatusCodeName(status.code())));
    // OpenTelemetry: server spans mark only server faults as errors.
    if (IsServerFault(status.code())) call->span->SetStatus(status);
    trace_id = call->span->context().trace_id.ToHex();
    call->span->End();
  }
  const Level level = status.ok()                    ? Level::kDebug
                      : IsServerFault(status.code()) ? Level::kWarn
                                                     : Level::kInfo;
  logger_.Log(level, status.ok() ? "RPC completed" : "RPC failed",
              {{"method", m.method},
               {"service", m.service},
               {"code", base::StatusCodeName(status.code())},
               {"error", status.message()},
               {"ms", std::chrono::duration<double, std::milli>(elapsed).count()},
               {"peer", ctx.peer()},
               {"trace_id", trace_id}});
}

base::Status AddMetricsRoute(rpc::Router& router, const MetricsRegistry& registry,
                             std::string path) {
  return router.AddHttpRoute(std::move(path), [&registry](const rpc::HttpRequest&) {
    rpc::HttpResponse response;
    response.status = 200;
    response.content_type = std::string(kPrometheusContentType);
    response.body = registry.RenderPrometheusText();
    return response;
  });
}

}  // namespace metald::observe

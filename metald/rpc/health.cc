#include "metald/rpc/health.h"

#include <utility>

namespace metald::rpc {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

HealthService::HealthService() {
  statuses_[""] = Entry{HealthCheckResponse::SERVING, next_version_++};
}

void HealthService::SetStatus(const std::string& service, ServingStatus status) {
  {
    std::lock_guard lock(mu_);
    auto it = statuses_.find(service);
    if (it != statuses_.end() && it->second.status == status) return;
    statuses_[service] = Entry{status, next_version_++};
  }
  changed_.notify_all();
}

void HealthService::Shutdown() {
  {
    std::lock_guard lock(mu_);
    for (auto& [name, entry] : statuses_) {
      if (entry.status == HealthCheckResponse::NOT_SERVING) continue;
      entry = Entry{HealthCheckResponse::NOT_SERVING, next_version_++};
    }
  }
  changed_.notify_all();
}

HealthService::Entry HealthService::Lookup(const std::string& service) const {
  auto it = statuses_.find(service);
  if (it == statuses_.end()) return Entry{HealthCheckResponse::SERVICE_UNKNOWN, 0};
  return it->second;
}

base::Status HealthService::Check(CallContext& ctx, const HealthCheckRequest& request,
                                  HealthCheckResponse& response) {
  (void)ctx;
  std::lock_guard lock(mu_);
  auto it = statuses_.find(request.service());
  if (it == statuses_.end()) {
    return base::NotFoundError("Unknown service: " + request.service());
  }
  response.set_status(it->second.status);
  return base::OkStatus();
}

base::Status HealthService::Watch(CallContext& ctx, const HealthCheckRequest& request,
                                  TypedStreamWriter<HealthCheckResponse>& writer) {
  CancelToken& cancel = ctx.cancel_token();
  // Taking mu_ before notifying means a Watch that saw "not cancelled" under mu_ is already
  // waiting on changed_ when the notification comes: no lost wake-up.
  uint64_t handle = cancel.OnCancel([this] {
    { std::lock_guard lock(mu_); }
    changed_.notify_all();
  });
  base::Status result;
  std::optional<uint64_t> sent_version;
  while (true) {
    Entry entry;
    {
      std::unique_lock lock(mu_);
      changed_.wait(lock, [&] {
        return cancel.cancelled() || !sent_version ||
               Lookup(request.service()).version != *sent_version;
      });
      if (cancel.cancelled()) {
        result = cancel.reason();
        break;
      }
      entry = Lookup(request.service());
    }
    HealthCheckResponse response;
    response.set_status(entry.status);
    result = writer.Write(response);
    if (!result.ok()) break;
    sent_version = entry.version;
  }
  cancel.RemoveCallback(handle);
  return result;
}

base::Status RegisterHealthService(Router& router, HealthService* health) {
  return ::grpc::health::v1::RegisterHealth(router, health);
}

}  // namespace metald::rpc

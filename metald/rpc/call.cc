#include "metald/rpc/call.h"

#include <vector>

namespace metald::rpc {

std::string_view ProtocolName(Protocol p) {
  switch (p) {
    case Protocol::kConnect:
      return "connect";
    case Protocol::kGrpc:
      return "grpc";
    case Protocol::kGrpcWeb:
      return "grpc-web";
  }
  return "unknown";
}

bool CancelToken::cancelled() const { return cancelled_fast_.load(std::memory_order_acquire); }

base::Status CancelToken::reason() const {
  std::lock_guard lock(mu_);
  return reason_;
}

bool CancelToken::Cancel(base::Status reason) {
  std::map<uint64_t, std::function<void()>> callbacks;
  {
    std::lock_guard lock(mu_);
    if (cancelled_) return false;
    cancelled_ = true;
    reason_ = reason.ok() ? base::CancelledError("Call canceled") : std::move(reason);
    cancelled_fast_.store(true, std::memory_order_release);
    callbacks.swap(callbacks_);
  }
  cv_.notify_all();
  // Outside the lock: callbacks may take their own locks (a transport's, a writer's).
  for (auto& [handle, fn] : callbacks) fn();
  return true;
}

uint64_t CancelToken::OnCancel(std::function<void()> fn) {
  {
    std::lock_guard lock(mu_);
    if (!cancelled_) {
      uint64_t h = next_handle_++;
      callbacks_.emplace(h, std::move(fn));
      return h;
    }
  }
  fn();
  return 0;
}

void CancelToken::RemoveCallback(uint64_t handle) {
  std::lock_guard lock(mu_);
  callbacks_.erase(handle);
}

bool CancelToken::WaitFor(std::chrono::nanoseconds timeout) const {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return cancelled_; });
  return cancelled_;
}

CallContext::CallContext(const MethodDesc& method, Protocol protocol, Codec codec,
                         Metadata request_headers, std::string peer,
                         std::optional<Clock::time_point> deadline,
                         std::shared_ptr<CancelToken> cancel)
    : method_(&method),
      protocol_(protocol),
      codec_(codec),
      request_headers_(std::move(request_headers)),
      peer_(std::move(peer)),
      deadline_(deadline),
      cancel_(cancel ? std::move(cancel) : std::make_shared<CancelToken>()) {}

}  // namespace metald::rpc

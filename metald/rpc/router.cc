#include "metald/rpc/router.h"

#include <algorithm>
#include <set>

namespace metald::rpc {

base::Status Router::AddMethod(MethodHandler handler) {
  const MethodDesc& d = handler.desc;
  if (d.path.empty() || d.path[0] != '/') {
    return base::InvalidArgumentError("Method path must start with '/': " + d.path);
  }
  if (!handler.request_prototype || !handler.response_prototype) {
    return base::InvalidArgumentError("Method " + d.path + " has no message prototypes");
  }
  bool unary = d.kind == MethodKind::kUnary;
  if (unary != static_cast<bool>(handler.unary) || unary == static_cast<bool>(handler.stream)) {
    return base::InvalidArgumentError("Method " + d.path + " handler does not match its kind");
  }
  if (methods_.contains(d.path) || http_routes_.contains(d.path)) {
    return base::AlreadyExistsError("Route " + d.path + " is already registered");
  }
  std::string path = d.path;
  methods_.emplace(std::move(path), std::move(handler));
  return base::OkStatus();
}

base::Status Router::AddHttpRoute(std::string path, HttpHandler handler) {
  if (path.empty() || path[0] != '/') {
    return base::InvalidArgumentError("HTTP route must start with '/': " + path);
  }
  if (methods_.contains(path) || http_routes_.contains(path)) {
    return base::AlreadyExistsError("Route " + path + " is already registered");
  }
  http_routes_.emplace(std::move(path), std::move(handler));
  return base::OkStatus();
}

void Router::AddInterceptor(std::shared_ptr<Interceptor> interceptor) {
  interceptors_.push_back(std::move(interceptor));
}

const MethodHandler* Router::FindMethod(std::string_view path) const {
  auto it = methods_.find(std::string(path));
  return it == methods_.end() ? nullptr : &it->second;
}

const HttpHandler* Router::FindHttpRoute(std::string_view path) const {
  auto it = http_routes_.find(std::string(path));
  return it == http_routes_.end() ? nullptr : &it->second;
}

std::vector<std::string> Router::ServiceNames() const {
  std::set<std::string> names;
  for (const auto& [path, h] : methods_) names.insert(h.desc.service);
  return {names.begin(), names.end()};
}

base::Status Router::SetMaxConcurrency(std::string_view path, int limit) {
  if (limit < 0) return base::InvalidArgumentError("max_concurrency must not be negative");
  auto it = methods_.find(std::string(path));
  if (it == methods_.end()) {
    return base::NotFoundError("No method at " + std::string(path));
  }
  it->second.desc.max_concurrency = limit;
  return base::OkStatus();
}

}  // namespace metald::rpc

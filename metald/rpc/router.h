#pragma once
// Router: the route table a Server serves: RPC methods by path, plain HTTP routes (/healthz,
// /metrics) and the interceptor chain. Built before Server::Start, immutable afterwards, so it is
// read without locks from every thread.

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "metald/base/status.h"
#include "metald/rpc/call.h"
#include "metald/rpc/metadata.h"

namespace metald::rpc {

struct HttpRequest {
  std::string method;  // "GET"
  std::string path;    // without the query
  std::string query;   // raw, without '?'
  Metadata headers;
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  Metadata headers;
  std::string body;
};

// Plain HTTP handler; runs on the handler pool. Must be thread-safe.
using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

class Router {
 public:
  // already_exists for a duplicate path; invalid_argument when the handler does not match its kind.
  base::Status AddMethod(MethodHandler handler);
  // Serves GET and HEAD on an exact path (no RPC path may collide).
  base::Status AddHttpRoute(std::string path, HttpHandler handler);
  void AddInterceptor(std::shared_ptr<Interceptor> interceptor);
  // Sets MethodDesc::max_concurrency of the method at `path` (e.g. one registered by generated
  // code). not_found when no method has that path; invalid_argument when `limit` < 0.
  base::Status SetMaxConcurrency(std::string_view path, int limit);

  const MethodHandler* FindMethod(std::string_view path) const;
  const HttpHandler* FindHttpRoute(std::string_view path) const;
  const std::vector<std::shared_ptr<Interceptor>>& interceptors() const { return interceptors_; }
  // Fully-qualified names of the services with at least one method, sorted.
  std::vector<std::string> ServiceNames() const;

 private:
  // Node-based maps: MethodHandler addresses stay valid, CallContext points at their MethodDesc.
  std::unordered_map<std::string, MethodHandler> methods_;
  std::unordered_map<std::string, HttpHandler> http_routes_;
  std::vector<std::shared_ptr<Interceptor>> interceptors_;
};

}  // namespace metald::rpc

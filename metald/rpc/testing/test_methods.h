#pragma once
// Building blocks the rpc tests share: a one-shot gate a handler waits on, the "Say" unary
// method on StringValue, and a fixed-text HTTP route. Test-only; header-only.

#include <google/protobuf/wrappers.pb.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <utility>

#include "metald/rpc/router.h"

namespace metald::rpc::testing {

// A one-shot gate: Wait blocks until Open (or the timeout, so that a broken test cannot hang).
// Thread-safe.
class Gate {
 public:
  explicit Gate(std::chrono::milliseconds timeout = std::chrono::seconds(20)) : timeout_(timeout) {}

  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  // Returns whether the gate opened (false on timeout).
  bool Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout_, [&] { return open_; });
  }

 private:
  const std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;  // guarded by mu_
};

// "/test.Echo/Say": StringValue in, StringValue "hello <value>" out.
inline MethodHandler SayMethod(bool nonblocking = false) {
  MethodHandler say;
  say.desc = MethodDesc{"test.Echo", "Say", "/test.Echo/Say", MethodKind::kUnary};
  say.desc.nonblocking = nonblocking;
  say.request_prototype = &google::protobuf::StringValue::default_instance();
  say.response_prototype = &google::protobuf::StringValue::default_instance();
  say.unary = [](CallContext&, const google::protobuf::Message& req,
                 google::protobuf::Message& resp) {
    static_cast<google::protobuf::StringValue&>(resp).set_value(
        "hello " + static_cast<const google::protobuf::StringValue&>(req).value());
    return base::OkStatus();
  };
  return say;
}

// A plain HTTP route answering 200 with `body`.
inline HttpHandler TextRoute(std::string body) {
  return [body = std::move(body)](const HttpRequest&) {
    HttpResponse r;
    r.body = body;
    return r;
  };
}

}  // namespace metald::rpc::testing

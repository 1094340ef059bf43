#include "tests/rpc/echo_service.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>

namespace metald::testing {
namespace {

// The status a fail_code names; invalid_argument when it names no code.
base::Status FailStatus(const std::string& fail_code, std::string message) {
  std::optional<base::StatusCode> code = base::StatusCodeFromName(fail_code);
  if (!code || *code == base::StatusCode::kOk) {
    return base::InvalidArgumentError("Unknown fail_code: " + fail_code);
  }
  return base::Status(*code, std::move(message));
}

// Sleeps `ms` unless the call ends first; then returns why it ended.
base::Status Sleep(rpc::CallContext& ctx, uint32_t ms) {
  if (ms == 0) return base::OkStatus();
  if (ctx.cancel_token().WaitFor(std::chrono::milliseconds(ms))) {
    return ctx.cancel_token().reason();
  }
  return base::OkStatus();
}

}  // namespace

base::Status EchoService::Echo(rpc::CallContext& ctx, const test::v1::EchoRequest& request,
                               test::v1::EchoResponse& response) {
  if (auto deadline = ctx.deadline()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        *deadline - rpc::CallContext::Clock::now());
    // A call that is still running has time left; report at least 1 so "0" keeps meaning none.
    response.set_timeout_ms(std::max<int64_t>(left.count(), 1));
  }
  response.set_message(request.message());
  response.set_number(request.number());
  response.set_payload(request.payload());
  for (const auto& [name, value] : ctx.request_headers()) {
    if (name.starts_with("x-test-")) (*response.mutable_headers())[name] = value;
  }
  response.set_protocol(std::string(rpc::ProtocolName(ctx.protocol())));
  response.set_codec(ctx.codec() == rpc::Codec::kJson ? "json" : "proto");
  ctx.response_headers().Add("x-echo-header", request.message());
  ctx.response_trailers().Add("x-echo-trailer", std::to_string(request.number()));

  RETURN_IF_ERROR(Sleep(ctx, request.sleep_ms()));
  if (request.response_bytes() > 0)
    response.set_payload(std::string(request.response_bytes(), 'x'));
  if (!request.fail_code().empty()) return FailStatus(request.fail_code(), request.message());
  return base::OkStatus();
}

base::Status EchoService::EchoGet(rpc::CallContext& ctx, const test::v1::EchoRequest& request,
                                  test::v1::EchoResponse& response) {
  return Echo(ctx, request, response);
}

base::Status EchoService::Count(rpc::CallContext& ctx, const test::v1::CountRequest& request,
                                rpc::TypedStreamWriter<test::v1::CountResponse>& writer) {
  for (int32_t n = 1; n <= request.count(); ++n) {
    if (n > 1) RETURN_IF_ERROR(Sleep(ctx, request.interval_ms()));
    test::v1::CountResponse response;
    response.set_n(n);
    RETURN_IF_ERROR(writer.Write(response));
  }
  if (!request.fail_code().empty()) return FailStatus(request.fail_code(), "count failed");
  return base::OkStatus();
}

}  // namespace metald::testing

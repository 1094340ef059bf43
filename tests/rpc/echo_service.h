#pragma once
// EchoService: the RPC layer's test service (tests/proto/metald/test/v1/echo.proto), served by
// rpc_echo_server and by in-process tests, so that every client (ours, buf curl, connect-node,
// grpc++, curl) can be compared answer for answer.
//
// Thread-safety: stateless; every method may run concurrently.

#include "metald/test/v1/echo.metald.h"

namespace metald::testing {

class EchoService : public test::v1::EchoServiceHandler {
 public:
  // Echoes message/number/payload, the request's x-test-* headers, the protocol and codec, and
  // the milliseconds left until the deadline (0: none). Sets response header
  // "x-echo-header: <message>" and trailer "x-echo-trailer: <number>" (also on errors). Then
  // sleeps sleep_ms (returning the cancellation reason if the call ends first), fills
  // response_bytes 'x' bytes of payload, and fails with fail_code + message when set.
  base::Status Echo(rpc::CallContext& ctx, const test::v1::EchoRequest& request,
                    test::v1::EchoResponse& response) override;
  // Same as Echo.
  base::Status EchoGet(rpc::CallContext& ctx, const test::v1::EchoRequest& request,
                       test::v1::EchoResponse& response) override;
  // Writes n = 1..count, pausing interval_ms (cancellable) between messages, then ends with
  // fail_code (message "count failed") when set.
  base::Status Count(rpc::CallContext& ctx, const test::v1::CountRequest& request,
                     rpc::TypedStreamWriter<test::v1::CountResponse>& writer) override;
};

}  // namespace metald::testing

#pragma once
// Start here. metald/api (style.md layer 5): the public metald.v1.VmService served on our RPC
// layer. This is the only place metald's proto types appear (architecture.md §6): every handler
// decodes the proto request into a service:: request, calls service::VmService, converts the
// result back, and maps errors through ToPublicStatus. Nothing else.
//
// Wiring (the daemon):
//
//   router.AddInterceptor(observability);            // first: counts unauthenticated calls too
//   RETURN_IF_ERROR(RegisterVmApi(router, service, authenticator, {}));
//   RETURN_IF_ERROR(AddHealthRoutes(router, service));
//   RETURN_IF_ERROR(rpc::RegisterHealthService(router, &health));  // unauthenticated
//
// Concurrency model: handlers run on the rpc server's handler pool, many at once, and block on
// the service (none is marked nonblocking). The handler and the interceptor hold only pointers
// and values that are constant after registration, so they need no locks.

#include <optional>

#include "metald/auth/authenticator.h"
#include "metald/base/status.h"
#include "metald/observe/log.h"
#include "metald/rpc/router.h"
#include "metald/service/vm_service.h"

namespace metald::api {

struct ApiOptions {
  // Where sanitised internal errors are logged with their full detail and reference id.
  // Default: observe::DefaultLogger().
  std::optional<observe::Logger> logger = std::nullopt;
};

// Registers every metald.v1.VmService method on `router` and adds the authentication
// interceptor. The interceptor applies to metald.v1.VmService methods only (grpc.health.v1.Health,
// /healthz, /readyz and /metrics stay open): it reads the `authorization` request header, calls
// authenticator->Authenticate and attaches the auth::Principal to the call
// (ctx.GetValue<auth::Principal>()); a missing or bad credential ends the call with
// unauthenticated and the authenticator's message, before the request is decoded.
//
// Ownership: the router owns the handler (through the interceptor it keeps), so they live exactly
// as long as the router; rpc::Server keeps its router alive while it serves.
// REQUIRES: `service` and `authenticator` are non-null and outlive the router.
// Errors: invalid_argument for a null pointer; already_exists when a VmService path is taken.
base::Status RegisterVmApi(rpc::Router& router, service::VmService* service,
                           const auth::Authenticator* authenticator, ApiOptions options = {});

// Adds GET/HEAD /healthz (200 "ok" while the process serves) and /readyz (200 "ready" when
// service->Ready() is OK, else 503 with body "not ready: <reason>"). Unauthenticated.
// REQUIRES: `service` is non-null and outlives the router.
// Errors: invalid_argument for a null service; those of Router::AddHttpRoute.
base::Status AddHealthRoutes(rpc::Router& router, service::VmService* service);

// The one place that decides what a client may see of an error (style.md rule 4; the rpc layer
// then maps the code to HTTP / Connect / gRPC). internal, unknown and data_loss errors are logged
// at error level with their full message and a short random reference ("ref" field), and become
// internal "Internal error (ref <ref>)"; every other status (OK included) is returned unchanged.
// Thread-safe.
base::Status ToPublicStatus(const base::Status& status, const observe::Logger& log);

}  // namespace metald::api

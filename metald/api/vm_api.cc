#include "metald/api/vm_api.h"

#include <memory>
#include <string>
#include <utility>

#include "metald/api/internal/convert.h"
#include "metald/v1/vm.metald.h"
#include "metald/v1/vm.pb.h"

namespace metald::api {
namespace {

using base::Status;
using internal::CheckVmId;

// One handler per RPC, each doing four things: decode (proto -> service request), call the
// service, convert back, map errors (ToPublicStatus). Stateless apart from constant pointers, so
// any number of calls may run at once.
class VmApiHandler final : public v1::VmServiceHandler {
 public:
  VmApiHandler(service::VmService* service, observe::Logger log)
      : service_(service), log_(std::move(log)) {}

  Status CreateVm(rpc::CallContext& ctx, const v1::CreateVmRequest& request,
                  v1::CreateVmResponse& response) override {
    ASSIGN_OR_RETURN(service::Caller caller, CallerOf(ctx));
    if (!request.has_config()) return base::InvalidArgumentError("config is required");
    service::CreateVmRequest create;
    ASSIGN_OR_RETURN(create.spec, internal::VmSpecFromProto(request.config()));
    create.idempotency_key = request.idempotency_key();
    auto result = service_->CreateVm(caller, create);
    if (!result.ok()) {
      Status status = result.status();
      if (status.code() == base::StatusCode::kInvalidArgument) {
        status = base::InvalidArgumentError(
            internal::RewriteSpecFieldPaths(status.message(), request.config()));
      }
      return Fail(ctx, status);
    }
    response.set_vm_id(result->vm.id);
    response.set_state(internal::VmStateToProto(result->vm.state));
    internal::VmToProto(result->vm, response.mutable_vm());
    return base::OkStatus();
  }

  Status BootVm(rpc::CallContext& ctx, const v1::BootVmRequest& request,
                v1::BootVmResponse& response) override {
    return StateCall<service::BootVmRequest>(ctx, request.vm_id(), response,
                                             &service::VmService::BootVm);
  }

  Status PauseVm(rpc::CallContext& ctx, const v1::PauseVmRequest& request,
                 v1::PauseVmResponse& response) override {
    return StateCall<service::PauseVmRequest>(ctx, request.vm_id(), response,
                                              &service::VmService::PauseVm);
  }

  Status ResumeVm(rpc::CallContext& ctx, const v1::ResumeVmRequest& request,
                  v1::ResumeVmResponse& response) override {
    return StateCall<service::ResumeVmRequest>(ctx, request.vm_id(), response,
                                               &service::VmService::ResumeVm);
  }

  Status RebootVm(rpc::CallContext& ctx, const v1::RebootVmRequest& request,
                  v1::RebootVmResponse& response) override {
    return StateCall<service::RebootVmRequest>(ctx, request.vm_id(), response,
                                               &service::VmService::RebootVm);
  }

  Status ShutdownVm(rpc::CallContext& ctx, const v1::ShutdownVmRequest& request,
                    v1::ShutdownVmResponse& response) override {
    ASSIGN_OR_RETURN(service::Caller caller, CallerOf(ctx));
    RETURN_IF_ERROR(CheckVmId(request.vm_id()));
    service::ShutdownVmRequest shutdown;
    shutdown.vm_id = request.vm_id();
    shutdown.force = request.force();
    ASSIGN_OR_RETURN(shutdown.timeout, internal::TimeoutFromProto(
                                           request.has_timeout() ? &request.timeout() : nullptr,
                                           internal::kDefaultShutdownTimeout, "timeout"));
    auto result = service_->ShutdownVm(caller, shutdown);
    if (!result.ok()) return Fail(ctx, result.status());
    response.set_state(internal::VmStateToProto(result->state));
    response.set_graceful(result->graceful);
    return base::OkStatus();
  }

  Status DeleteVm(rpc::CallContext& ctx, const v1::DeleteVmRequest& request,
                  v1::DeleteVmResponse& response) override {
    (void)response;
    ASSIGN_OR_RETURN(service::Caller caller, CallerOf(ctx));
    RETURN_IF_ERROR(CheckVmId(request.vm_id()));
    Status status =
        service_->DeleteVm(caller, {.vm_id = request.vm_id(), .force = request.force()});
    return status.ok() ? status : Fail(ctx, status);
  }

  Status GetVmInfo(rpc::CallContext& ctx, const v1::GetVmInfoRequest& request,
                   v1::GetVmInfoResponse& response) override {
    ASSIGN_OR_RETURN(service::Caller caller, CallerOf(ctx));
    RETURN_IF_ERROR(CheckVmId(request.vm_id()));
    auto result = service_->GetVmInfo(caller, {.vm_id = request.vm_id()});
    if (!result.ok()) return Fail(ctx, result.status());
    internal::VmToProto(*result, response.mutable_vm());
    return base::OkStatus();
  }

  Status ListVms(rpc::CallContext& ctx, const v1::ListVmsRequest& request,
                 v1::ListVmsResponse& response) override {
    ASSIGN_OR_RETURN(service::Caller caller, CallerOf(ctx));
    service::ListVmsRequest list;
    list.page_size = internal::PageSizeFromProto(request.page_size());
    list.page_token = request.page_token();
    for (int i = 0; i < request.state_filter_size(); ++i) {
      ASSIGN_OR_RETURN(model::VmState state,
                       internal::VmStateFromProto(request.state_filter(i),
                                                  "state_filter[" + std::to_string(i) + "]"));
      list.states.push_back(state);
    }
    auto result = service_->ListVms(caller, list);
    if (!result.ok()) return Fail(ctx, result.status());
    for (const service::Vm& vm : result->vms) internal::VmToProto(vm, response.add_vms());
    response.set_next_page_token(result->next_page_token);
    return base::OkStatus();
  }

  Status WatchVmEvents(rpc::CallContext& ctx, const v1::WatchVmEventsRequest& request,
                       rpc::TypedStreamWriter<v1::VmEvent>& writer) override {
    ASSIGN_OR_RETURN(service::Caller caller, CallerOf(ctx));
    service::WatchVmEventsRequest watch;
    if (!request.vm_id().empty()) RETURN_IF_ERROR(CheckVmId(request.vm_id()));
    watch.vm_id = request.vm_id();
    ASSIGN_OR_RETURN(watch.after_seq, internal::CursorFromProto(request.cursor()));
    // The stream ends when the service returns: the client went away or its deadline passed
    // (caller.cancelled / caller.deadline), or a write failed (the sink returns false).
    Status write_status;
    v1::VmEvent event;
    Status status = service_->WatchVmEvents(caller, watch, [&](const service::VmEvent& e) {
      internal::VmEventToProto(e, &event);
      write_status = writer.Write(event);
      return write_status.ok();
    });
    if (!write_status.ok()) return Fail(ctx, write_status);
    return status.ok() ? status : Fail(ctx, status);
  }

  Status WaitVm(rpc::CallContext& ctx, const v1::WaitVmRequest& request,
                v1::WaitVmResponse& response) override {
    ASSIGN_OR_RETURN(service::Caller caller, CallerOf(ctx));
    RETURN_IF_ERROR(CheckVmId(request.vm_id()));
    service::WaitVmRequest wait;
    wait.vm_id = request.vm_id();
    if (request.states_size() == 0) return base::InvalidArgumentError("states is required");
    for (int i = 0; i < request.states_size(); ++i) {
      ASSIGN_OR_RETURN(
          model::VmState state,
          internal::VmStateFromProto(request.states(i), "states[" + std::to_string(i) + "]"));
      wait.states.push_back(state);
    }
    ASSIGN_OR_RETURN(wait.timeout, internal::TimeoutFromProto(
                                       request.has_timeout() ? &request.timeout() : nullptr,
                                       internal::kDefaultWaitTimeout, "timeout"));
    auto result = service_->WaitVm(caller, wait);
    if (!result.ok()) return Fail(ctx, result.status());
    internal::VmToProto(*result, response.mutable_vm());
    return base::OkStatus();
  }

 private:
  // The caller the service sees: the authenticated customer, this call's deadline and its
  // cancellation (client gone, deadline passed, server shutting down).
  static base::Result<service::Caller> CallerOf(rpc::CallContext& ctx) {
    const auth::Principal* principal = ctx.GetValue<auth::Principal>();
    // Only reachable when the interceptor was not installed: refuse rather than act for nobody.
    if (principal == nullptr) return base::UnauthenticatedError("Missing bearer token");
    service::Caller caller;
    caller.customer_id = principal->customer_id;
    caller.deadline = ctx.deadline();
    caller.cancelled = [token = ctx.shared_cancel_token()] { return token->cancelled(); };
    return caller;
  }

  // Boot, Pause, Resume and Reboot: a vm_id in, the VM's resulting state out.
  template <typename ServiceRequest, typename Response, typename Method>
  Status StateCall(rpc::CallContext& ctx, const std::string& vm_id, Response& response,
                   Method method) {
    ASSIGN_OR_RETURN(service::Caller caller, CallerOf(ctx));
    RETURN_IF_ERROR(CheckVmId(vm_id));
    ServiceRequest request;
    request.vm_id = vm_id;
    base::Result<service::VmStateResponse> result = (service_->*method)(caller, request);
    if (!result.ok()) return Fail(ctx, result.status());
    response.set_state(internal::VmStateToProto(result->state));
    return base::OkStatus();
  }

  Status Fail(const rpc::CallContext& ctx, const Status& status) const {
    const auth::Principal* principal = ctx.GetValue<auth::Principal>();
    return ToPublicStatus(
        status, log_.With({{"method", ctx.method().method},
                           {"customer_id", principal ? principal->customer_id : std::string()}}));
  }

  // Constant after construction.
  service::VmService* const service_;
  const observe::Logger log_;
};

// Authenticates metald.v1.VmService calls (see RegisterVmApi). Also owns the handler, so that the
// router, which keeps its interceptors, keeps the handler alive exactly as long as itself.
class AuthInterceptor final : public rpc::Interceptor {
 public:
  AuthInterceptor(const auth::Authenticator* authenticator, std::shared_ptr<VmApiHandler> handler)
      : authenticator_(authenticator), handler_(std::move(handler)) {}

  Status OnRequest(rpc::CallContext& ctx) override {
    if (ctx.method().service != v1::kVmServiceName) return base::OkStatus();
    std::optional<std::string_view> header = ctx.request_headers().Get("authorization");
    base::Result<auth::Principal> principal = authenticator_->Authenticate(header.value_or(""));
    if (!principal.ok()) {
      // Authenticate promises unauthenticated; hold to it whatever happens inside.
      return base::UnauthenticatedError(principal.status().message());
    }
    ctx.SetValue<auth::Principal>(
        std::make_shared<const auth::Principal>(std::move(principal).value()));
    return base::OkStatus();
  }

 private:
  // Constant after construction.
  const auth::Authenticator* const authenticator_;
  const std::shared_ptr<VmApiHandler> handler_;
};

rpc::HttpResponse PlainResponse(int status, std::string body) {
  rpc::HttpResponse response;
  response.status = status;
  response.body = std::move(body);
  response.headers.Set("cache-control", "no-store");
  return response;
}

}  // namespace

base::Status RegisterVmApi(rpc::Router& router, service::VmService* service,
                           const auth::Authenticator* authenticator, ApiOptions options) {
  if (service == nullptr) return base::InvalidArgumentError("RegisterVmApi: service is null");
  if (authenticator == nullptr) {
    return base::InvalidArgumentError("RegisterVmApi: authenticator is null");
  }
  auto handler = std::make_shared<VmApiHandler>(
      service, options.logger ? std::move(*options.logger) : observe::DefaultLogger());
  // Interceptor first: should a path be taken, the methods registered so far stay authenticated.
  router.AddInterceptor(std::make_shared<AuthInterceptor>(authenticator, handler));
  return v1::RegisterVmService(router, handler.get());
}

base::Status AddHealthRoutes(rpc::Router& router, service::VmService* service) {
  if (service == nullptr) return base::InvalidArgumentError("AddHealthRoutes: service is null");
  RETURN_IF_ERROR(router.AddHttpRoute(
      "/healthz", [](const rpc::HttpRequest&) { return PlainResponse(200, "ok"); }));
  return router.AddHttpRoute("/readyz", [service](const rpc::HttpRequest&) {
    Status ready = service->Ready();
    if (ready.ok()) return PlainResponse(200, "ready");
    return PlainResponse(503, "not ready: " + ready.message());
  });
}

}  // namespace metald::api

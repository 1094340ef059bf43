// rpc_bench_server: metald's RPC server (metald/rpc/server.h) serving metald.v1.VmService with
// GetVmInfo answering the benchmark fixture (bench/vm_info_fixture.h) and every other method
// unimplemented, for run_rpc_bench.sh. Serves every protocol the RPC layer speaks (gRPC h2c,
// Connect JSON/proto over HTTP/1.1 and h2c).
//
//   rpc_bench_server [--listen 127.0.0.1:0] [--io-threads 1] [--handler-threads 16]
//                    [--nonblocking]
//
// --nonblocking marks GetVmInfo nonblocking (MethodDesc::nonblocking: the engine runs it inline
// on the I/O thread); without it the call hops to the handler pool, as a blocking handler does.
// Prints "proto_bytes N", "json_bytes N" and "listening ADDR" on stdout once serving; exits 0 on
// SIGTERM or SIGINT.

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "bench/vm_info_fixture.h"
#include "metald/rpc/server.h"
#include "metald/rpc/wire.h"
#include "metald/v1/vm.metald.h"

namespace {

namespace rpc = metald::rpc;
namespace v1 = metald::v1;
using metald::base::Status;

Status Unimplemented() { return metald::base::UnimplementedError("Not served by the benchmark"); }

// GetVmInfo copies the fixture, as a real handler fills its response; the rest is
// unimplemented. Thread-safety: the fixture is only read after construction.
class BenchVmService final : public v1::VmServiceHandler {
 public:
  Status GetVmInfo(rpc::CallContext&, const v1::GetVmInfoRequest&,
                   v1::GetVmInfoResponse& response) override {
    response.CopyFrom(fixture_);
    return metald::base::OkStatus();
  }
  Status CreateVm(rpc::CallContext&, const v1::CreateVmRequest&, v1::CreateVmResponse&) override {
    return Unimplemented();
  }
  Status BootVm(rpc::CallContext&, const v1::BootVmRequest&, v1::BootVmResponse&) override {
    return Unimplemented();
  }
  Status PauseVm(rpc::CallContext&, const v1::PauseVmRequest&, v1::PauseVmResponse&) override {
    return Unimplemented();
  }
  Status ResumeVm(rpc::CallContext&, const v1::ResumeVmRequest&, v1::ResumeVmResponse&) override {
    return Unimplemented();
  }
  Status RebootVm(rpc::CallContext&, const v1::RebootVmRequest&, v1::RebootVmResponse&) override {
    return Unimplemented();
  }
  Status ShutdownVm(rpc::CallContext&, const v1::ShutdownVmRequest&,
                    v1::ShutdownVmResponse&) override {
    return Unimplemented();
  }
  Status DeleteVm(rpc::CallContext&, const v1::DeleteVmRequest&, v1::DeleteVmResponse&) override {
    return Unimplemented();
  }
  Status ListVms(rpc::CallContext&, const v1::ListVmsRequest&, v1::ListVmsResponse&) override {
    return Unimplemented();
  }
  Status WatchVmEvents(rpc::CallContext&, const v1::WatchVmEventsRequest&,
                       rpc::TypedStreamWriter<v1::VmEvent>&) override {
    return Unimplemented();
  }
  Status WaitVm(rpc::CallContext&, const v1::WaitVmRequest&, v1::WaitVmResponse&) override {
    return Unimplemented();
  }

 private:
  const v1::GetVmInfoResponse fixture_ = metald::bench::MakeBenchVmInfoResponse();
};

// Builds the router: the generated registration, with GetVmInfo re-marked nonblocking when
// asked (the generator has no option for it, so the method is copied from a scratch router).
metald::base::Result<std::shared_ptr<rpc::Router>> BuildRouter(BenchVmService* service,
                                                               bool nonblocking) {
  rpc::Router generated;
  Status st = v1::RegisterVmService(generated, service);
  if (!st.ok()) return st;
  auto router = std::make_shared<rpc::Router>();
  const google::protobuf::ServiceDescriptor* methods =
      v1::GetVmInfoRequest::descriptor()->file()->FindServiceByName("VmService");
  if (methods == nullptr) return metald::base::InternalError("No VmService descriptor");
  for (int i = 0; i < methods->method_count(); ++i) {
    std::string path = "/" + methods->full_name() + "/" + methods->method(i)->name();
    const rpc::MethodHandler* found = generated.FindMethod(path);
    if (found == nullptr) return metald::base::InternalError("Not registered: " + path);
    rpc::MethodHandler handler = *found;
    if (nonblocking && methods->method(i)->name() == "GetVmInfo") handler.desc.nonblocking = true;
    st = router->AddMethod(std::move(handler));
    if (!st.ok()) return st;
  }
  return router;
}

int Usage(const char* argv0, const std::string& problem) {
  std::fprintf(stderr,
               "%s\nusage: %s [--listen ADDR] [--io-threads N] [--handler-threads N] "
               "[--nonblocking]\n",
               problem.c_str(), argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  rpc::ServerOptions options;
  bool nonblocking = false;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--nonblocking") {
      nonblocking = true;
      continue;
    }
    if (i + 1 >= argc) return Usage(argv[0], "Missing value for " + flag);
    std::string value = argv[++i];
    if (flag == "--listen") {
      options.listen.push_back(value);
    } else if (flag == "--io-threads") {
      options.io_threads = std::stoi(value);
    } else if (flag == "--handler-threads") {
      options.handler_threads = std::stoi(value);
    } else {
      return Usage(argv[0], "Unknown flag " + flag);
    }
  }
  if (options.listen.empty()) options.listen.push_back("127.0.0.1:0");

  // Block the stop signals before any thread starts, so only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  BenchVmService service;
  auto router = BuildRouter(&service, nonblocking);
  if (!router.ok()) {
    std::fprintf(stderr, "rpc_bench_server: %s\n", router.status().ToString().c_str());
    return 1;
  }
  auto server = rpc::Server::Start(options, *router);
  if (!server.ok()) {
    std::fprintf(stderr, "rpc_bench_server: %s\n", server.status().ToString().c_str());
    return 1;
  }
  const v1::GetVmInfoResponse fixture = metald::bench::MakeBenchVmInfoResponse();
  auto json = rpc::wire::SerializeMessage(rpc::Codec::kJson, fixture);
  std::printf("proto_bytes %zu\njson_bytes %zu\n", fixture.ByteSizeLong(),
              json.ok() ? json->size() : 0);
  for (const std::string& addr : (*server)->addresses()) {
    std::printf("listening %s\n", addr.c_str());
  }
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  (*server)->Shutdown(std::chrono::milliseconds(1000));
  return 0;
}

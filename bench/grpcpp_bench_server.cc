// grpcpp_bench_server: the anchor for the gRPC benchmark. A grpc++ synchronous server
// (ServerBuilder + the generated metald.v1.VmService::Service, GetVmInfo overridden, every other
// method left unimplemented) answering GetVmInfo with the same fixture rpc_bench_server serves,
// insecure h2c.
//
//   grpcpp_bench_server [--listen 127.0.0.1:0] [--cqs N] [--min-pollers N] [--max-pollers N]
//
// The poller flags map to ServerBuilder::SetSyncServerOption; unset keeps grpc++'s defaults.
// Prints "proto_bytes N" and "listening ADDR" on stdout once serving; exits 0 on SIGTERM/SIGINT.

#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>

#include "bench/vm_info_fixture.h"
#include "metald/v1/vm.grpc.pb.h"

namespace {

// Thread-safety: the fixture is only read after construction.
class VmService final : public metald::v1::VmService::Service {
 public:
  grpc::Status GetVmInfo(grpc::ServerContext*, const metald::v1::GetVmInfoRequest*,
                         metald::v1::GetVmInfoResponse* response) override {
    response->CopyFrom(fixture_);
    return grpc::Status::OK;
  }

 private:
  const metald::v1::GetVmInfoResponse fixture_ = metald::bench::MakeBenchVmInfoResponse();
};

int Usage(const char* argv0, const std::string& problem) {
  std::fprintf(stderr,
               "%s\nusage: %s [--listen HOST:PORT] [--cqs N] [--min-pollers N] "
               "[--max-pollers N]\n",
               problem.c_str(), argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:0";
  grpc::ServerBuilder builder;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) return Usage(argv[0], "Missing value for " + flag);
    std::string value = argv[++i];
    if (flag == "--listen") {
      listen = value;
    } else if (flag == "--cqs") {
      builder.SetSyncServerOption(grpc::ServerBuilder::NUM_CQS, std::stoi(value));
    } else if (flag == "--min-pollers") {
      builder.SetSyncServerOption(grpc::ServerBuilder::MIN_POLLERS, std::stoi(value));
    } else if (flag == "--max-pollers") {
      builder.SetSyncServerOption(grpc::ServerBuilder::MAX_POLLERS, std::stoi(value));
    } else {
      return Usage(argv[0], "Unknown flag " + flag);
    }
  }

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  VmService service;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "grpcpp_bench_server: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  std::printf("proto_bytes %zu\nlistening %s:%d\n",
              metald::bench::MakeBenchVmInfoResponse().ByteSizeLong(),
              listen.substr(0, listen.rfind(':')).c_str(), port);
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  server->Shutdown();
  return 0;
}

// rpc_echo_server: serves metald.test.v1.EchoService and grpc.health.v1.Health over every
// protocol the RPC layer speaks, for the cross-client tests (buf curl, connect-node, grpc++,
// curl). Prints "listening <addr>" per bound address on stdout once serving; exits 0 on
// SIGTERM or SIGINT.
//
//   rpc_echo_server [--listen ADDR]... [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM
//                   [--tls-require-client-cert=true]]]
//   ADDR: "127.0.0.1:0" (default), "[::1]:8080", "unix:/path/to.sock".

#include <signal.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "metald/rpc/health.h"
#include "metald/rpc/server.h"
#include "tests/rpc/echo_service.h"

namespace {

int Usage(const char* argv0, const std::string& problem) {
  std::fprintf(stderr,
               "%s\nusage: %s [--listen ADDR]... [--tls-cert PEM --tls-key PEM "
               "[--tls-client-ca PEM [--tls-require-client-cert=true]]]\n",
               problem.c_str(), argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  metald::rpc::ServerOptions options;
  metald::rpc::TlsOptions tls;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    std::string value;
    if (auto eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag.resize(eq);
    } else if (flag.starts_with("--") && flag != "--help") {
      if (i + 1 >= argc) return Usage(argv[0], "Missing value for " + flag);
      value = argv[++i];
    }
    if (flag == "--listen") {
      options.listen.push_back(value);
    } else if (flag == "--tls-cert") {
      tls.cert_file = value;
    } else if (flag == "--tls-key") {
      tls.key_file = value;
    } else if (flag == "--tls-client-ca") {
      tls.client_ca_file = value;
    } else if (flag == "--tls-require-client-cert") {
      tls.require_client_cert = value == "true" || value == "1";
    } else if (flag == "--help") {
      return Usage(argv[0], "Serves metald.test.v1.EchoService.");
    } else {
      return Usage(argv[0], "Unknown flag " + flag);
    }
  }
  if (options.listen.empty()) options.listen.push_back("127.0.0.1:0");
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return Usage(argv[0], "--tls-cert and --tls-key go together");
  }
  if (!tls.cert_file.empty()) options.tls = tls;
  if (!tls.client_ca_file.empty() && tls.cert_file.empty()) {
    return Usage(argv[0], "--tls-client-ca needs --tls-cert and --tls-key");
  }

  // A shell starts background jobs with SIGINT ignored, and an ignored signal never reaches
  // sigwait: restore the default disposition first. Then block the stop signals before any
  // thread starts, so only sigwait below receives them.
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  metald::testing::EchoService echo;
  metald::rpc::HealthService health;
  auto router = std::make_shared<metald::rpc::Router>();
  metald::base::Status st = metald::test::v1::RegisterEchoService(*router, &echo);
  if (st.ok()) st = metald::rpc::RegisterHealthService(*router, &health);
  if (!st.ok()) {
    std::fprintf(stderr, "rpc_echo_server: %s\n", st.ToString().c_str());
    return 1;
  }
  health.SetStatus(std::string(metald::test::v1::kEchoServiceName),
                   grpc::health::v1::HealthCheckResponse::SERVING);

  auto server = metald::rpc::Server::Start(options, router);
  if (!server.ok()) {
    std::fprintf(stderr, "rpc_echo_server: %s\n", server.status().ToString().c_str());
    return 1;
  }
  for (const std::string& addr : (*server)->addresses()) {
    std::printf("listening %s\n", addr.c_str());
  }
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  health.Shutdown();
  (*server)->Shutdown(std::chrono::milliseconds(1000));
  return 0;
}

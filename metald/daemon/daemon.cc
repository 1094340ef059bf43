#include "metald/daemon/daemon.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "metald/api/vm_api.h"
#include "metald/auth/authenticator.h"
#include "metald/backend/registry.h"
#include "metald/model/backend_kind.h"
#include "metald/net/network.h"
#include "metald/observe/export/rpc_observability.h"
#include "metald/observe/log.h"
#include "metald/observe/metrics.h"
#include "metald/observe/process_metrics.h"
#include "metald/observe/trace.h"
#include "metald/process/cgroup.h"
#include "metald/process/jail.h"
#include "metald/process/process.h"
#include "metald/rpc/health.h"
#include "metald/rpc/router.h"
#include "metald/rpc/server.h"
#include "metald/service/vm_service.h"
#include "metald/store/repository.h"

namespace metald::daemon {
namespace {

namespace fs = std::filesystem;

// The gRPC health service name whose status follows VmService::Ready().
constexpr char kVmServiceName[] = "metald.v1.VmService";
// In-flight calls get this long to finish on shutdown.
constexpr std::chrono::seconds kShutdownGrace{5};

int Fail(const std::string& what, const base::Status& status) {
  std::fprintf(stderr, "metald: %s: %s\n", what.c_str(), status.message().c_str());
  return kExitStartupError;
}

base::Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return base::FailedPreconditionError("Cannot read " + path + ": " + std::strerror(errno));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return base::FailedPreconditionError("Cannot read " + path);
  return ss.str();
}

base::Result<auth::AuthOptions> MakeAuthOptions(const Config& config) {
  auth::AuthOptions options;
  options.allow_dev_tokens = config.dev_tokens;
  options.jwks_file = config.jwks_file;
  options.issuer = config.jwt_issuer;
  options.audience = config.jwt_audience;
  options.customer_claim = config.jwt_customer_claim;
  for (const JwtKeyFlag& flag : config.jwt_keys) {
    auth::JwtKey key;
    key.kid = flag.kid;
    // ParseConfig validated the name.
    key.algorithm = *auth::JwtAlgorithmFromName(flag.algorithm);
    ASSIGN_OR_RETURN(key.material, ReadFile(flag.path));
    options.keys.push_back(std::move(key));
  }
  return options;
}

// qemu-system-x86_64 from PATH; empty when not found (the backend then reports unavailable).
std::string FindInPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path == nullptr ? "/usr/local/bin:/usr/bin:/bin" : path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

backend::qemu::Accel ParseAccel(const std::string& accel) {
  if (accel == "kvm") return backend::qemu::Accel::kKvm;
  if (accel == "tcg") return backend::qemu::Accel::kTcg;
  return backend::qemu::Accel::kAuto;
}

void ConfigureLogging(const Config& config) {
  observe::Logger& log = observe::DefaultLogger();
  log.SetSink(std::make_shared<observe::StreamLogSink>(stderr, config.log_format == "text"
                                                                   ? observe::LogFormat::kLogfmt
                                                                   : observe::LogFormat::kJson));
  log.SetLevel(observe::ParseLevel(config.log_level).value_or(observe::Level::kInfo));
}

std::string Join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const std::string& s : items) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

}  // namespace

base::Status WriteFileAtomically(const std::string& path, const std::vector<std::string>& lines) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) {
      return base::FailedPreconditionError("Cannot write " + tmp + ": " + std::strerror(errno));
    }
    for (const std::string& line : lines) out << line << '\n';
    out.flush();
    if (!out) return base::FailedPreconditionError("Cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    return base::FailedPreconditionError("Cannot rename " + tmp + " to " + path + ": " +
                                         std::strerror(err));
  }
  return base::OkStatus();
}

int Run(const Config& config) {
  // A shell starts background jobs with SIGINT ignored, and an ignored signal never reaches
  // sigtimedwait: restore the default disposition, then block the stop signals before any thread
  // starts so that every thread inherits the mask and only the wait below receives them.
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  ConfigureLogging(config);
  observe::Logger log = observe::DefaultLogger();

  observe::MetricsRegistry registry;
  observe::AddProcessMetrics(registry);
  observe::Tracer tracer;

  {
    std::error_code ec;
    fs::create_directories(config.vm_root(), ec);
    if (ec) {
      return Fail(
          "--data-dir " + config.data_dir,
          base::FailedPreconditionError("Cannot create " + config.vm_root() + ": " + ec.message()));
    }
  }

  auto auth_options = MakeAuthOptions(config);
  if (!auth_options.ok()) return Fail("--jwt-key", auth_options.status());
  auto authenticator = auth::Authenticator::Create(std::move(*auth_options));
  if (!authenticator.ok()) return Fail("authentication", authenticator.status());

  store::DatabaseOptions db_options;
  db_options.path = config.db_path();
  store::RepositoryOptions repository_options;
  repository_options.max_page_size = 1000;  // ListVms allows pages of up to 1000.
  auto repository = store::VmRepository::Open(db_options, repository_options);
  if (!repository.ok()) return Fail("store " + config.db_path(), repository.status());

  std::unique_ptr<process::ProcessSpawner> spawner = process::NewSystemSpawner();

  backend::BackendOptions backend_options;
  backend_options.kind = *model::ParseBackendKind(config.backend);
  backend_options.spawner = spawner.get();
  backend::qemu::QemuOptions& qemu = backend_options.qemu;
  qemu.binary = config.qemu_binary.empty() ? FindInPath("qemu-system-x86_64") : config.qemu_binary;
  qemu.accel = ParseAccel(config.accel);
  qemu.probe_kernel = config.kvm_probe_kernel;
  qemu.probe_initrd = config.kvm_probe_initrd;
  // Decide the accelerator once, here, so that the startup log says which one and why; the
  // backend then uses the decision instead of probing again.
  backend::qemu::AccelChoice accel = backend::qemu::ChooseAccel(qemu, spawner.get());
  qemu.accel = accel.kvm ? backend::qemu::Accel::kKvm : backend::qemu::Accel::kTcg;
  const std::string accel_name = accel.kvm ? "kvm" : "tcg";
  log.Info("Accelerator chosen", {{"accel", accel_name}, {"reason", accel.reason}});
  if (base::Status available = backend::CheckAvailable(backend_options); !available.ok()) {
    // Not fatal: /readyz reports it, and VMs created by an earlier metald can still be listed.
    log.Warn("Backend not available", {{"backend", config.backend}, {"error", available}});
  }
  if (config.jail) {
    if (::geteuid() != 0) {
      return Fail("--jail", base::FailedPreconditionError(
                                "The jailer needs root (chroot, mounts, setuid, cgroups)"));
    }
    qemu.jail_base = config.jail_dir();
    std::error_code ec;
    fs::create_directories(qemu.jail_base, ec);
    if (ec) {
      return Fail("--jail-base " + qemu.jail_base,
                  base::FailedPreconditionError("Cannot create it: " + ec.message()));
    }
  }
  auto backend = backend::MakeBackend(backend_options);
  if (!backend.ok()) return Fail("--backend " + config.backend, backend.status());

  std::unique_ptr<net::Network> network;
  if (config.network) {
    net::NetworkOptions net_options;
    net_options.name_prefix = config.network_prefix;
    net_options.ipv4_cidr = config.network_cidr;
    net_options.lease_db_path = config.lease_db_path();
    net_options.nat_uplink = config.nat_uplink;
    net_options.logger = log.With({{"component", "net"}});
    auto opened = net::Network::Open(std::move(net_options));
    if (!opened.ok()) return Fail("--network", opened.status());
    network = std::move(*opened);
  }

  service::ServiceDeps deps;
  deps.repository = repository->get();
  deps.backend = backend->get();
  deps.network = network.get();
  service::ServiceOptions service_options;
  service_options.vm_root = config.vm_root();
  service_options.image_roots = config.image_roots;
  service_options.max_vms_per_customer = config.max_vms_per_customer;
  // Declared before the service, so they outlive it.
  std::unique_ptr<process::CgroupManager> cgroups;
  std::unique_ptr<process::UidAllocator> uids;
  if (config.jail) {
    process::CgroupOptions cgroup_options;
    cgroup_options.root_name = config.cgroup_root;
    cgroup_options.cpu_ratio = config.cpu_ratio;
    cgroup_options.default_customer_limits.memory_bytes = config.customer_memory_max_mib << 20;
    cgroup_options.default_customer_limits.cpus = config.customer_cpus_max;
    auto opened = process::CgroupManager::Open(cgroup_options);
    if (!opened.ok()) return Fail("--cgroup-root " + config.cgroup_root, opened.status());
    cgroups = std::move(*opened);
    log.Info("cgroups", {{"mode", cgroups->Mode()}});
    uids = std::make_unique<process::UidAllocator>(config.uid_first, config.uid_last);
    deps.cgroups = cgroups.get();
    deps.uids = uids.get();
    service_options.jail = true;
    service_options.jail_memory_overhead_bytes = config.jail_memory_overhead_mib << 20;
    service_options.jail_writable_disk_dir = config.writable_disk_dir;
  }
  service_options.logger = log;  // The service adds its own component field.
  auto vm_service = service::StartVmService(deps, std::move(service_options));
  if (!vm_service.ok()) return Fail("VM service", vm_service.status());

  // The router points at the service, the authenticator, the registry and the health service:
  // all of them outlive the server, which is shut down and destroyed first.
  rpc::HealthService health;
  health.SetStatus(kVmServiceName, ::grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  auto router = std::make_shared<rpc::Router>();
  {
    auto interceptor = observe::ObservabilityInterceptor::Create(registry, tracer, {});
    if (!interceptor.ok()) return Fail("metrics", interceptor.status());
    router->AddInterceptor(*interceptor);
    base::Status st = api::RegisterVmApi(*router, vm_service->get(), authenticator->get(), {});
    // Watches and long polls hold a handler thread each for as long as the client likes: cap
    // each at a quarter of the pool so that they can never starve the lifecycle calls.
    const int long_call_limit = std::max(1, config.handler_threads / 4);
    for (const char* method : {"WatchVmEvents", "WaitVm"}) {
      if (st.ok()) {
        st = router->SetMaxConcurrency("/metald.v1.VmService/" + std::string(method),
                                       long_call_limit);
      }
    }
    if (st.ok()) st = api::AddHealthRoutes(*router, vm_service->get());
    if (st.ok()) st = observe::AddMetricsRoute(*router, registry);
    if (st.ok()) st = rpc::RegisterHealthService(*router, &health);
    if (!st.ok()) return Fail("routes", st);
  }

  rpc::ServerOptions server_options;
  server_options.listen = config.listen;
  server_options.handler_threads = config.handler_threads;
  if (!config.tls_cert.empty()) {
    rpc::TlsOptions tls;
    tls.cert_file = config.tls_cert;
    tls.key_file = config.tls_key;
    tls.client_ca_file = config.tls_client_ca;
    tls.require_client_cert = !config.tls_client_ca.empty();
    server_options.tls = tls;
  }
  auto server = rpc::Server::Start(server_options, router);
  if (!server.ok()) return Fail("listen " + Join(config.listen, ", "), server.status());
  const std::vector<std::string> addresses = (*server)->addresses();

  if (!config.ready_file.empty()) {
    if (base::Status st = WriteFileAtomically(config.ready_file, addresses); !st.ok()) {
      (*server)->Shutdown(std::chrono::milliseconds(0));
      return Fail("--ready-file", st);
    }
  }
  log.Info("metald ready", {{"addresses", Join(addresses, ",")},
                            {"backend", config.backend},
                            {"accel", accel_name},
                            {"data_dir", config.data_dir},
                            {"network", config.network},
                            {"dev_tokens", config.dev_tokens}});

  // Wait for a stop signal; meanwhile keep the gRPC health status in step with readiness.
  int signal_number = 0;
  bool was_ready = false;
  while (true) {
    bool ready = (*vm_service)->Ready().ok();
    if (ready != was_ready) {
      health.SetStatus(kVmServiceName, ready
                                           ? ::grpc::health::v1::HealthCheckResponse::SERVING
                                           : ::grpc::health::v1::HealthCheckResponse::NOT_SERVING);
      was_ready = ready;
    }
    timespec timeout{1, 0};
    int sig = sigtimedwait(&stop_signals, nullptr, &timeout);
    if (sig == SIGINT || sig == SIGTERM) {
      signal_number = sig;
      break;
    }
  }

  log.Info("metald stopping", {{"signal", signal_number == SIGINT ? "SIGINT" : "SIGTERM"}});
  health.Shutdown();
  (*server)->Shutdown(kShutdownGrace);
  server->reset();
  router.reset();
  // VMM processes keep running; the next metald re-adopts them.
  vm_service->reset();
  network.reset();
  backend->reset();
  repository->reset();
  if (!config.ready_file.empty()) std::remove(config.ready_file.c_str());
  log.Info("metald stopped");
  log.Flush();
  return kExitOk;
}

}  // namespace metald::daemon

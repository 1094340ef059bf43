// metald/api end to end: the generated VmServiceClient over a real rpc::Client, a real
// rpc::Server on 127.0.0.1:0, the real auth::Authenticator (dev tokens + one HS256 key), and a
// fake service::VmService written here that records what it was asked and answers from a script.

#include "metald/api/vm_api.h"

#include <arpa/inet.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "grpc/health/v1/health.pb.h"
#include "metald/auth/authenticator.h"
#include "metald/auth/testing/jwt_minter.h"
#include "metald/model/vm_id.h"
#include "metald/observe/testing/log_capture.h"
#include "metald/rpc/client.h"
#include "metald/rpc/health.h"
#include "metald/rpc/server.h"
#include "metald/v1/vm.metald.h"

namespace metald::api {
namespace {

using base::StatusCode;
using google::protobuf::util::MessageDifferencer;

const std::string kSecret = "0123456789abcdef0123456789abcdef-test-secret";

// What the fake saw of one call.
struct Seen {
  std::string method;
  service::Caller caller;
  bool cancelled_at_call = true;  // caller.cancelled() when the call arrived
};

class FakeVmService : public service::VmService {
 public:
  // Every method fails with this when set.
  void FailWith(base::Status status) {
    std::lock_guard lock(mu_);
    fail_ = std::move(status);
  }
  void SetReady(base::Status status) {
    std::lock_guard lock(mu_);
    ready_ = std::move(status);
  }
  std::vector<Seen> calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }
  // The VM CreateVm, GetVmInfo, WaitVm and ListVms answer with.
  void SetVm(service::Vm vm) {
    std::lock_guard lock(mu_);
    vm_ = std::move(vm);
  }
  // The state Boot, Pause, Resume and Reboot answer with.
  void SetState(model::VmState state) {
    std::lock_guard lock(mu_);
    state_response_.state = state;
  }

  // The last request of each kind.
  struct Recorded {
    service::CreateVmRequest create;
    std::string lifecycle_vm_id;
    service::ShutdownVmRequest shutdown;
    service::DeleteVmRequest del;
    service::GetVmInfoRequest get;
    service::ListVmsRequest list;
    service::WatchVmEventsRequest watch;
    service::WaitVmRequest wait;
  };
  Recorded seen() const {
    std::lock_guard lock(mu_);
    return rec_;
  }

  // WatchVmEvents: how it ended ("sink" or "cancelled"), signalled on watch_cv_.
  std::optional<std::string> WaitForWatchEnd(std::chrono::seconds timeout) {
    std::unique_lock lock(mu_);
    watch_cv_.wait_for(lock, timeout, [&] { return watch_end_.has_value(); });
    return watch_end_;
  }

  base::Result<service::CreateVmResponse> CreateVm(
      const service::Caller& caller, const service::CreateVmRequest& request) override {
    RETURN_IF_ERROR(Record("CreateVm", caller));
    std::lock_guard lock(mu_);
    rec_.create = request;
    service::CreateVmResponse response;
    response.vm = vm_;
    response.vm.spec = request.spec;
    return response;
  }
  base::Result<service::VmStateResponse> BootVm(const service::Caller& caller,
                                                const service::BootVmRequest& request) override {
    return Lifecycle("BootVm", caller, request.vm_id);
  }
  base::Result<service::VmStateResponse> PauseVm(const service::Caller& caller,
                                                 const service::PauseVmRequest& request) override {
    return Lifecycle("PauseVm", caller, request.vm_id);
  }
  base::Result<service::VmStateResponse> ResumeVm(
      const service::Caller& caller, const service::ResumeVmRequest& request) override {
    return Lifecycle("ResumeVm", caller, request.vm_id);
  }
  base::Result<service::VmStateResponse> RebootVm(
      const service::Caller& caller, const service::RebootVmRequest& request) override {
    return Lifecycle("RebootVm", caller, request.vm_id);
  }
  base::Result<service::ShutdownVmResponse> ShutdownVm(
      const service::Caller& caller, const service::ShutdownVmRequest& request) override {
    RETURN_IF_ERROR(Record("ShutdownVm", caller));
    std::lock_guard lock(mu_);
    rec_.shutdown = request;
    return service::ShutdownVmResponse{model::VmState::kStopped, true};
  }
  base::Status DeleteVm(const service::Caller& caller,
                        const service::DeleteVmRequest& request) override {
    RETURN_IF_ERROR(Record("DeleteVm", caller));
    std::lock_guard lock(mu_);
    rec_.del = request;
    return base::OkStatus();
  }
  base::Result<service::Vm> GetVmInfo(const service::Caller& caller,
                                      const service::GetVmInfoRequest& request) override {
    RETURN_IF_ERROR(Record("GetVmInfo", caller));
    std::lock_guard lock(mu_);
    rec_.get = request;
    return vm_;
  }
  base::Result<service::ListVmsResponse> ListVms(const service::Caller& caller,
                                                 const service::ListVmsRequest& request) override {
    RETURN_IF_ERROR(Record("ListVms", caller));
    std::lock_guard lock(mu_);
    rec_.list = request;
    service::ListVmsResponse response;
    response.vms = {vm_, vm_};
    response.vms[1].id = "vm-second";
    response.next_page_token = "page-2";
    return response;
  }
  // Emits events seq 7, 8, 9, ... every 5 ms until the sink refuses one or the caller is
  // cancelled (bounded, so a broken cancellation path fails the test instead of hanging it).
  base::Status WatchVmEvents(const service::Caller& caller,
                             const service::WatchVmEventsRequest& request,
                             const std::function<bool(const service::VmEvent&)>& sink) override {
    RETURN_IF_ERROR(Record("WatchVmEvents", caller));
    {
      std::lock_guard lock(mu_);
      rec_.watch = request;
    }
    std::string end = "timeout";
    for (int64_t seq = 7; seq < 7 + 6000; ++seq) {
      if (caller.cancelled && caller.cancelled()) {
        end = "cancelled";
        break;
      }
      service::VmEvent e;
      e.seq = seq;
      e.vm_id = "vm-watched";
      if (seq > 7) e.from = model::VmState::kCreated;
      e.to = seq == 7 ? model::VmState::kCreated : model::VmState::kDeleted;
      e.reason = model::TransitionReason::kGuestShutdown;
      e.message = "event " + std::to_string(seq);
      e.at_unix_ns = 1'700'000'000'000'000'000 + seq;
      if (!sink(e)) {
        end = "sink";
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::lock_guard lock(mu_);
    watch_end_ = end;
    watch_cv_.notify_all();
    return base::OkStatus();
  }
  base::Result<service::Vm> WaitVm(const service::Caller& caller,
                                   const service::WaitVmRequest& request) override {
    RETURN_IF_ERROR(Record("WaitVm", caller));
    std::lock_guard lock(mu_);
    rec_.wait = request;
    return vm_;
  }
  base::Status Ready() override {
    std::lock_guard lock(mu_);
    return ready_;
  }

 private:
  base::Status Record(const std::string& method, const service::Caller& caller) {
    std::lock_guard lock(mu_);
    calls_.push_back({method, caller, caller.cancelled ? caller.cancelled() : true});
    return fail_;
  }
  base::Result<service::VmStateResponse> Lifecycle(const std::string& method,
                                                   const service::Caller& caller,
                                                   const std::string& vm_id) {
    RETURN_IF_ERROR(Record(method, caller));
    std::lock_guard lock(mu_);
    rec_.lifecycle_vm_id = vm_id;
    return state_response_;
  }

  mutable std::mutex mu_;
  std::condition_variable watch_cv_;
  std::vector<Seen> calls_;                                            // guarded by mu_
  base::Status fail_;                                                  // guarded by mu_
  base::Status ready_;                                                 // guarded by mu_
  std::optional<std::string> watch_end_;                               // guarded by mu_
  Recorded rec_;                                                       // guarded by mu_
  service::Vm vm_;                                                     // guarded by mu_
  service::VmStateResponse state_response_{model::VmState::kRunning};  // guarded by mu_
};

// A plain HTTP/1.1 GET over a socket: (status, body). Status 0 when the exchange failed.
std::pair<int, std::string> HttpGet(const std::string& address, const std::string& path) {
  const size_t colon = address.rfind(':');
  const std::string host = address.substr(0, colon);
  const int port = std::stoi(address.substr(colon + 1));
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return {0, ""};
  timeval tv{.tv_sec = 30, .tv_usec = 0};  // only to avoid a hang
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &sa.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return {0, ""};
  }
  const std::string request =
      "GET " + path + " HTTP/1.1\r\nHost: " + address + "\r\nConnection: close\r\n\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return {0, ""};
  }
  std::string raw;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  std::smatch m;
  if (!std::regex_search(raw, m, std::regex(R"(^HTTP/1\.1 (\d{3}))"))) return {0, raw};
  const size_t body_at = raw.find("\r\n\r\n");
  return {std::stoi(m[1]), body_at == std::string::npos ? "" : raw.substr(body_at + 4)};
}

class VmApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auth::AuthOptions auth_options;
    auth_options.allow_dev_tokens = true;
    auth_options.keys.push_back(
        {.kid = "k1", .algorithm = auth::JwtAlgorithm::kHS256, .material = kSecret});
    auto authenticator = auth::Authenticator::Create(std::move(auth_options));
    ASSERT_TRUE(authenticator.ok()) << authenticator.status().ToString();
    authenticator_ = std::move(authenticator).value();

    log_sink_ = std::make_shared<observe::testing::CapturingLogSink>();
    auto router = std::make_shared<rpc::Router>();
    ASSERT_TRUE(RegisterVmApi(*router, &fake_, authenticator_.get(),
                              {.logger = observe::Logger({.sink = log_sink_})})
                    .ok());
    ASSERT_TRUE(AddHealthRoutes(*router, &fake_).ok());
    ASSERT_TRUE(rpc::RegisterHealthService(*router, &health_).ok());

    rpc::ServerOptions server_options;
    server_options.listen = {"127.0.0.1:0"};
    server_options.handler_threads = 4;
    auto server = rpc::Server::Start(server_options, router);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    address_ = server_->addresses().at(0);

    rpc::ClientOptions client_options;
    client_options.target = address_;
    auto client = rpc::Client::Create(client_options);
    ASSERT_TRUE(client.ok());
    rpc_client_ = std::move(client).value();
    client_ = std::make_unique<v1::VmServiceClient>(rpc_client_.get());

    vm_ = SampleVm();
    fake_.SetVm(vm_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::milliseconds(0));
  }

  static rpc::CallOptions As(const std::string& authorization) {
    rpc::CallOptions options;
    if (!authorization.empty()) options.headers.Add("authorization", authorization);
    return options;
  }
  static rpc::CallOptions Acme() { return As("Bearer dev_customer_acme"); }

  static service::Vm SampleVm() {
    service::Vm vm;
    vm.id = model::VmIdGenerator().Next();
    vm.customer_id = "acme";
    vm.state = model::VmState::kRunning;
    vm.backend = model::BackendKind::kFirecracker;
    vm.spec.boot.kernel_path = "/images/vmlinuz";
    vm.state_reason = model::TransitionReason::kRecovered;
    vm.state_message = "re-adopted";
    service::VmNic& nic = vm.network.emplace_back();
    nic.id = "eth0";
    nic.mac_address = "02:00:00:00:00:09";
    nic.ipv4_address = "10.213.0.2/16";
    nic.ipv4_gateway = "10.213.0.1";
    nic.tap_device = "tap0";
    vm.pid = 4242;
    vm.incarnation = 3;
    vm.created_unix_ns = 1'700'000'000'000'000'001;
    vm.updated_unix_ns = 1'700'000'001'500'000'000;
    vm.booted_unix_ns = 1'700'000'002'000'000'000;
    return vm;
  }

  std::string ValidId() const { return vm_.id; }

  service::Vm vm_;  // what the fake answers with
  FakeVmService fake_;
  rpc::HealthService health_;
  std::unique_ptr<auth::Authenticator> authenticator_;
  std::shared_ptr<observe::testing::CapturingLogSink> log_sink_;
  std::unique_ptr<rpc::Server> server_;
  std::string address_;
  std::unique_ptr<rpc::Client> rpc_client_;
  std::unique_ptr<v1::VmServiceClient> client_;
};

v1::VmConfig FullConfig() {
  v1::VmConfig c;
  c.mutable_cpu()->set_vcpu_count(2);
  c.mutable_memory()->set_size_bytes(256ull << 20);
  c.mutable_boot()->set_kernel_path("/images/vmlinuz");
  c.mutable_boot()->set_initrd_path("/images/initrd.img");
  c.mutable_boot()->set_kernel_args("console=ttyS0");
  auto* root = c.add_storage();
  root->set_id("root");
  root->set_path("/images/root.ext4");
  root->set_is_root(true);
  auto* scratch = c.add_storage();
  scratch->set_id("scratch");
  scratch->set_path("/images/scratch.img");
  scratch->set_read_only(true);
  auto* eth0 = c.add_network();
  eth0->set_id("eth0");
  eth0->set_mac_address("02:00:00:00:00:01");
  eth0->set_ipv4_address("10.0.0.5/24");
  eth0->set_ipv4_gateway("10.0.0.1");
  eth0->mutable_rx_rate_limit()->set_bandwidth_bytes_per_sec(125000);
  eth0->mutable_tx_rate_limit()->set_bandwidth_bytes_per_sec(250000);
  auto* eth1 = c.add_network();
  eth1->set_id("eth1");
  eth1->set_ipv6_address("fd00::5/64");
  eth1->set_ipv6_gateway("fd00::1");
  c.mutable_console()->set_enabled(true);
  c.mutable_console()->set_log_file("console.log");
  (*c.mutable_metadata())["owner"] = "team-a";
  return c;
}

TEST_F(VmApiTest, CreateVmRoundTripsAFullConfig) {
  v1::CreateVmRequest request;
  *request.mutable_config() = FullConfig();
  request.set_idempotency_key("key-1");
  auto response = client_->CreateVm(request, Acme());
  ASSERT_TRUE(response.ok()) << response.status().ToString();

  // Proto -> model: what the service was asked.
  const FakeVmService::Recorded seen = fake_.seen();
  const model::VmSpec& spec = seen.create.spec;
  EXPECT_EQ(fake_.seen().create.idempotency_key, "key-1");
  EXPECT_EQ(spec.cpu.vcpu_count, 2u);
  EXPECT_EQ(spec.memory.size_bytes, 256ull << 20);
  EXPECT_EQ(spec.boot.initrd_path, "/images/initrd.img");
  ASSERT_EQ(spec.storage.size(), 2u);
  EXPECT_TRUE(spec.storage[0].root);
  EXPECT_TRUE(spec.storage[1].read_only);
  ASSERT_EQ(spec.network.size(), 2u);
  EXPECT_EQ(spec.network[0].gateway, "10.0.0.1");
  EXPECT_EQ(spec.network[0].rx_bytes_per_sec, 125000u);
  EXPECT_EQ(spec.network[0].tx_bytes_per_sec, 250000u);
  EXPECT_EQ(spec.network[1].gateway, "fd00::1");
  EXPECT_EQ(spec.metadata.at("owner"), "team-a");

  // Model -> proto: the same config comes back, plus the VM's own fields.
  std::string diff;
  MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(request.config(), response->vm().config())) << diff;
  EXPECT_EQ(response->vm_id(), vm_.id);
  EXPECT_EQ(response->state(), v1::VM_STATE_RUNNING);
  const v1::VmInfo& vm = response->vm();
  EXPECT_EQ(vm.vm_id(), vm_.id);
  EXPECT_EQ(vm.customer_id(), "acme");
  EXPECT_EQ(vm.backend(), v1::BACKEND_KIND_FIRECRACKER);
  EXPECT_EQ(vm.state_reason(), v1::TRANSITION_REASON_RECOVERED);
  EXPECT_EQ(vm.state_message(), "re-adopted");
  EXPECT_EQ(vm.created_at().seconds(), 1'700'000'000);
  EXPECT_EQ(vm.created_at().nanos(), 1);
  EXPECT_EQ(vm.updated_at().seconds(), 1'700'000'001);
  EXPECT_EQ(vm.updated_at().nanos(), 500'000'000);
  EXPECT_EQ(vm.booted_at().seconds(), 1'700'000'002);
  EXPECT_EQ(vm.process_id(), 4242u);
  EXPECT_EQ(vm.incarnation(), 3u);
  ASSERT_EQ(vm.network_size(), 1);
  EXPECT_EQ(vm.network(0).id(), "eth0");
  EXPECT_EQ(vm.network(0).mac_address(), "02:00:00:00:00:09");
  EXPECT_EQ(vm.network(0).ipv4_address(), "10.213.0.2/16");
  EXPECT_EQ(vm.network(0).tap_device(), "tap0");

  auto calls = fake_.calls();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].caller.customer_id, "acme");
  EXPECT_FALSE(calls[0].cancelled_at_call);
  EXPECT_FALSE(calls[0].caller.deadline.has_value());
}

TEST_F(VmApiTest, NeverBootedVmHasNoBootedAt) {
  vm_.booted_unix_ns = 0;
  vm_.pid = 0;
  fake_.SetVm(vm_);
  v1::GetVmInfoRequest request;
  request.set_vm_id(ValidId());
  auto response = client_->GetVmInfo(request, Acme());
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_FALSE(response->vm().has_booted_at());
  EXPECT_EQ(response->vm().process_id(), 0u);
  EXPECT_EQ(fake_.seen().get.vm_id, ValidId());
}

TEST_F(VmApiTest, CallerIsTheJwtCustomerWithTheCallDeadline) {
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const std::string token = auth::testing_util::MintJwt(
      "HS256", kSecret, {{"customer_id", "cust-jwt"}, {"sub", "alice"}, {"exp", now + 3600}},
      {{"kid", "k1"}});
  rpc::CallOptions options = As("Bearer " + token);
  options.timeout = std::chrono::milliseconds(60'000);
  v1::BootVmRequest request;
  request.set_vm_id(ValidId());
  const auto before = std::chrono::steady_clock::now();
  auto response = client_->BootVm(request, options);
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_EQ(response->state(), v1::VM_STATE_RUNNING);
  auto calls = fake_.calls();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].method, "BootVm");
  EXPECT_EQ(calls[0].caller.customer_id, "cust-jwt");
  ASSERT_TRUE(calls[0].caller.deadline.has_value());
  EXPECT_GT(*calls[0].caller.deadline, before);
  EXPECT_LE(*calls[0].caller.deadline, before + std::chrono::seconds(61));
  ASSERT_TRUE(calls[0].caller.cancelled);
  EXPECT_FALSE(calls[0].cancelled_at_call);
}

TEST_F(VmApiTest, LifecycleCallsConvertBothWays) {
  const std::string id = ValidId();
  fake_.SetState(model::VmState::kPaused);
  v1::PauseVmRequest pause;
  pause.set_vm_id(id);
  auto paused = client_->PauseVm(pause, Acme());
  ASSERT_TRUE(paused.ok()) << paused.status().ToString();
  EXPECT_EQ(paused->state(), v1::VM_STATE_PAUSED);
  EXPECT_EQ(fake_.seen().lifecycle_vm_id, id);

  fake_.SetState(model::VmState::kRunning);
  v1::ResumeVmRequest resume;
  resume.set_vm_id(id);
  auto resumed = client_->ResumeVm(resume, Acme());
  ASSERT_TRUE(resumed.ok());
  EXPECT_EQ(resumed->state(), v1::VM_STATE_RUNNING);

  v1::RebootVmRequest reboot;
  reboot.set_vm_id(id);
  ASSERT_TRUE(client_->RebootVm(reboot, Acme()).ok());

  v1::ShutdownVmRequest shutdown;
  shutdown.set_vm_id(id);
  auto stopped = client_->ShutdownVm(shutdown, Acme());
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
  EXPECT_EQ(stopped->state(), v1::VM_STATE_STOPPED);
  EXPECT_TRUE(stopped->graceful());
  EXPECT_EQ(fake_.seen().shutdown.timeout, std::chrono::seconds(30));  // unset: the default
  EXPECT_FALSE(fake_.seen().shutdown.force);
  shutdown.set_force(true);
  shutdown.mutable_timeout()->set_seconds(5);
  shutdown.mutable_timeout()->set_nanos(250'000'000);
  ASSERT_TRUE(client_->ShutdownVm(shutdown, Acme()).ok());
  EXPECT_EQ(fake_.seen().shutdown.timeout, std::chrono::milliseconds(5250));
  EXPECT_TRUE(fake_.seen().shutdown.force);

  v1::DeleteVmRequest del;
  del.set_vm_id(id);
  del.set_force(true);
  ASSERT_TRUE(client_->DeleteVm(del, Acme()).ok());
  EXPECT_EQ(fake_.seen().del.vm_id, id);
  EXPECT_TRUE(fake_.seen().del.force);

  std::vector<std::string> methods;
  for (const Seen& s : fake_.calls()) methods.push_back(s.method);
  EXPECT_EQ(methods, (std::vector<std::string>{"PauseVm", "ResumeVm", "RebootVm", "ShutdownVm",
                                               "ShutdownVm", "DeleteVm"}));
}

TEST_F(VmApiTest, ListVmsConvertsFilterPageAndResults) {
  v1::ListVmsRequest request;
  request.set_page_size(5000);
  request.set_page_token("tok");
  request.add_state_filter(v1::VM_STATE_RUNNING);
  request.add_state_filter(v1::VM_STATE_SHUTTING_DOWN);
  auto response = client_->ListVms(request, Acme());
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_EQ(fake_.seen().list.page_size, 1000);
  EXPECT_EQ(fake_.seen().list.page_token, "tok");
  EXPECT_EQ(fake_.seen().list.states,
            (std::vector<model::VmState>{model::VmState::kRunning, model::VmState::kShuttingDown}));
  ASSERT_EQ(response->vms_size(), 2);
  EXPECT_EQ(response->vms(0).vm_id(), vm_.id);
  EXPECT_EQ(response->vms(1).vm_id(), "vm-second");
  EXPECT_EQ(response->next_page_token(), "page-2");

  request.set_page_size(0);
  request.clear_state_filter();
  ASSERT_TRUE(client_->ListVms(request, Acme()).ok());
  EXPECT_EQ(fake_.seen().list.page_size, 0);
  EXPECT_TRUE(fake_.seen().list.states.empty());
}

TEST_F(VmApiTest, WaitVmConvertsStatesAndTimeout) {
  v1::WaitVmRequest request;
  request.set_vm_id(ValidId());
  request.add_states(v1::VM_STATE_STOPPED);
  request.add_states(v1::VM_STATE_FAILED);
  auto response = client_->WaitVm(request, Acme());
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_EQ(response->vm().vm_id(), vm_.id);
  EXPECT_EQ(fake_.seen().wait.states,
            (std::vector<model::VmState>{model::VmState::kStopped, model::VmState::kFailed}));
  EXPECT_EQ(fake_.seen().wait.timeout, std::chrono::seconds(60));
  request.mutable_timeout()->set_seconds(600);
  ASSERT_TRUE(client_->WaitVm(request, Acme()).ok());
  EXPECT_EQ(fake_.seen().wait.timeout, std::chrono::minutes(10));
}

// Calls every VmService method with `options` and returns each status.
std::vector<std::pair<std::string, base::Status>> CallEveryMethod(v1::VmServiceClient& client,
                                                                  const rpc::CallOptions& options,
                                                                  const std::string& id) {
  std::vector<std::pair<std::string, base::Status>> out;
  v1::CreateVmRequest create;
  *create.mutable_config() = FullConfig();
  out.emplace_back("CreateVm", client.CreateVm(create, options).status());
  v1::BootVmRequest boot;
  boot.set_vm_id(id);
  out.emplace_back("BootVm", client.BootVm(boot, options).status());
  v1::PauseVmRequest pause;
  pause.set_vm_id(id);
  out.emplace_back("PauseVm", client.PauseVm(pause, options).status());
  v1::ResumeVmRequest resume;
  resume.set_vm_id(id);
  out.emplace_back("ResumeVm", client.ResumeVm(resume, options).status());
  v1::RebootVmRequest reboot;
  reboot.set_vm_id(id);
  out.emplace_back("RebootVm", client.RebootVm(reboot, options).status());
  v1::ShutdownVmRequest shutdown;
  shutdown.set_vm_id(id);
  out.emplace_back("ShutdownVm", client.ShutdownVm(shutdown, options).status());
  v1::DeleteVmRequest del;
  del.set_vm_id(id);
  out.emplace_back("DeleteVm", client.DeleteVm(del, options).status());
  v1::GetVmInfoRequest get;
  get.set_vm_id(id);
  out.emplace_back("GetVmInfo", client.GetVmInfo(get, options).status());
  out.emplace_back("ListVms", client.ListVms({}, options).status());
  v1::WatchVmEventsRequest watch;
  out.emplace_back("WatchVmEvents", client.WatchVmEvents(
                                        watch, [](const v1::VmEvent&) { return false; }, options));
  v1::WaitVmRequest wait;
  wait.set_vm_id(id);
  wait.add_states(v1::VM_STATE_RUNNING);
  out.emplace_back("WaitVm", client.WaitVm(wait, options).status());
  return out;
}

TEST_F(VmApiTest, EveryMethodNeedsAValidToken) {
  const std::string garbage_jwt =
      auth::testing_util::MintJwt("HS256", "a-different-secret-of-at-least-32-bytes!",
                                  {{"customer_id", "evil"}}, {{"kid", "k1"}});
  for (const std::string& authorization :
       {std::string(), std::string("Bearer "), std::string("Basic dXNlcjpwYXNz"),
        std::string("Bearer dev_customer_"), std::string("Bearer garbage"),
        "Bearer " + garbage_jwt}) {
    const std::string want = authenticator_->Authenticate(authorization).status().message();
    ASSERT_FALSE(want.empty());
    auto results = CallEveryMethod(*client_, As(authorization), ValidId());
    ASSERT_EQ(results.size(), 11u);
    for (const auto& [method, status] : results) {
      EXPECT_EQ(status.code(), StatusCode::kUnauthenticated)
          << method << " with '" << authorization << "': " << status.ToString();
      EXPECT_EQ(status.message(), want) << method;
    }
  }
  EXPECT_TRUE(fake_.calls().empty());
}

TEST_F(VmApiTest, EveryMethodWorksWithAToken) {
  auto results = CallEveryMethod(*client_, Acme(), ValidId());
  for (const auto& [method, status] : results) {
    EXPECT_TRUE(status.ok()) << method << ": " << status.ToString();
  }
  auto calls = fake_.calls();
  ASSERT_EQ(calls.size(), 11u);
  for (const Seen& s : calls) EXPECT_EQ(s.caller.customer_id, "acme") << s.method;
}

TEST_F(VmApiTest, HealthEndpointsNeedNoToken) {
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(rpc_client_->Unary("/grpc.health.v1.Health/Check", request, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(HttpGet(address_, "/healthz"), std::make_pair(200, std::string("ok")));
  EXPECT_EQ(HttpGet(address_, "/readyz"), std::make_pair(200, std::string("ready")));
}

TEST_F(VmApiTest, ReadyzIs503WithTheReasonWhenTheServiceIsNotReady) {
  fake_.SetReady(base::UnavailableError("Start-up recovery is running"));
  auto [status, body] = HttpGet(address_, "/readyz");
  EXPECT_EQ(status, 503);
  EXPECT_NE(body.find("Start-up recovery is running"), std::string::npos) << body;
  // Liveness does not depend on readiness.
  EXPECT_EQ(HttpGet(address_, "/healthz").first, 200);
  fake_.SetReady(base::OkStatus());
  EXPECT_EQ(HttpGet(address_, "/readyz").first, 200);
}

TEST_F(VmApiTest, InternalErrorsReachTheClientOnlyAsARef) {
  const std::string secret = "sqlite3_step: disk I/O error on /var/lib/metald/metald.db";
  fake_.FailWith(base::InternalError("GetVmInfo " + ValidId() + ": " + secret));
  v1::GetVmInfoRequest request;
  request.set_vm_id(ValidId());
  auto response = client_->GetVmInfo(request, Acme());
  ASSERT_EQ(response.status().code(), StatusCode::kInternal);
  std::smatch m;
  const std::string message = response.status().message();
  ASSERT_TRUE(std::regex_match(message, m, std::regex(R"(Internal error \(ref ([0-9a-f]{8})\))")))
      << message;
  EXPECT_EQ(message.find("sqlite"), std::string::npos);

  auto logged = log_sink_->Find("Internal error hidden from client");
  ASSERT_TRUE(logged.has_value());
  EXPECT_EQ(logged->Get("ref"), m[1].str());
  EXPECT_EQ(logged->Get("method"), "GetVmInfo");
  EXPECT_EQ(logged->Get("customer_id"), "acme");
  EXPECT_NE(logged->Get("error").value_or("").find(secret), std::string::npos);

  // A streaming call is sanitised the same way.
  fake_.FailWith(base::DataLossError("spool /var/spool/metald corrupt"));
  base::Status watch = client_->WatchVmEvents(
      {}, [](const v1::VmEvent&) { return true; }, Acme());
  EXPECT_EQ(watch.code(), StatusCode::kInternal);
  EXPECT_EQ(watch.message().find("spool"), std::string::npos) << watch.message();
}

TEST_F(VmApiTest, ClientErrorsPassThroughUnchanged) {
  fake_.FailWith(base::FailedPreconditionError("Cannot pause VM in state STOPPED"));
  v1::PauseVmRequest request;
  request.set_vm_id(ValidId());
  EXPECT_EQ(client_->PauseVm(request, Acme()).status(),
            base::FailedPreconditionError("Cannot pause VM in state STOPPED"));
  fake_.FailWith(base::NotFoundError("VM " + ValidId() + " not found"));
  EXPECT_EQ(client_->PauseVm(request, Acme()).status(),
            base::NotFoundError("VM " + ValidId() + " not found"));
}

TEST_F(VmApiTest, InvalidArgumentNamesTheProtoFieldTheClientSent) {
  v1::CreateVmRequest request;
  *request.mutable_config() = FullConfig();
  fake_.FailWith(base::InvalidArgumentError("storage[0].root: at most one device is the root"));
  EXPECT_EQ(client_->CreateVm(request, Acme()).status(),
            base::InvalidArgumentError("storage[0].is_root: at most one device is the root"));
  fake_.FailWith(base::InvalidArgumentError("network[0].gateway is not an IP address"));
  EXPECT_EQ(client_->CreateVm(request, Acme()).status(),
            base::InvalidArgumentError("network[0].ipv4_gateway is not an IP address"));
  fake_.FailWith(base::InvalidArgumentError("network[1].gateway is not an IP address"));
  EXPECT_EQ(client_->CreateVm(request, Acme()).status(),
            base::InvalidArgumentError("network[1].ipv6_gateway is not an IP address"));
  fake_.FailWith(base::InvalidArgumentError("cpu.vcpu_count must be between 1 and 32"));
  EXPECT_EQ(client_->CreateVm(request, Acme()).status(),
            base::InvalidArgumentError("cpu.vcpu_count must be between 1 and 32"));
}

TEST_F(VmApiTest, BadInputIsRefusedBeforeTheService) {
  auto expect_invalid = [](const base::Status& status, const std::string& needle) {
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
    EXPECT_NE(status.message().find(needle), std::string::npos) << status.ToString();
  };
  // vm_id: required; a malformed one is not_found like a missing VM.
  v1::BootVmRequest boot;
  EXPECT_EQ(client_->BootVm(boot, Acme()).status(),
            base::InvalidArgumentError("vm_id is required"));
  boot.set_vm_id("vm-../../etc");
  EXPECT_EQ(client_->BootVm(boot, Acme()).status(),
            base::NotFoundError("VM vm-../../etc not found"));
  v1::GetVmInfoRequest get;
  get.set_vm_id("not-an-id");
  EXPECT_EQ(client_->GetVmInfo(get, Acme()).status().code(), StatusCode::kNotFound);

  // Config.
  v1::CreateVmRequest create;
  expect_invalid(client_->CreateVm(create, Acme()).status(), "config");
  *create.mutable_config() = FullConfig();
  create.mutable_config()->mutable_network(0)->set_ipv6_gateway("fd00::1");
  expect_invalid(client_->CreateVm(create, Acme()).status(), "network[0]");
  *create.mutable_config() = FullConfig();
  create.mutable_config()->mutable_network(0)->mutable_rx_rate_limit()->set_ops_per_sec(100);
  EXPECT_EQ(client_->CreateVm(create, Acme()).status(),
            base::InvalidArgumentError("network[0].rx_rate_limit.ops_per_sec: not supported"));

  // Enums.
  v1::ListVmsRequest list;
  list.add_state_filter(v1::VM_STATE_RUNNING);
  list.add_state_filter(v1::VM_STATE_UNSPECIFIED);
  expect_invalid(client_->ListVms(list, Acme()).status(), "state_filter[1]");
  v1::WaitVmRequest wait;
  wait.set_vm_id(ValidId());
  expect_invalid(client_->WaitVm(wait, Acme()).status(), "states");
  wait.add_states(static_cast<v1::VmState>(77));  // an unknown value on the wire
  expect_invalid(client_->WaitVm(wait, Acme()).status(), "states[0]");

  // Durations.
  v1::ShutdownVmRequest shutdown;
  shutdown.set_vm_id(ValidId());
  shutdown.mutable_timeout()->set_seconds(-1);
  expect_invalid(client_->ShutdownVm(shutdown, Acme()).status(), "timeout");
  shutdown.mutable_timeout()->set_seconds(601);
  expect_invalid(client_->ShutdownVm(shutdown, Acme()).status(), "timeout");
  wait.clear_states();
  wait.add_states(v1::VM_STATE_RUNNING);
  wait.mutable_timeout()->set_seconds(11 * 60);
  expect_invalid(client_->WaitVm(wait, Acme()).status(), "timeout");

  // Cursor.
  v1::WatchVmEventsRequest watch;
  watch.set_cursor("yesterday");
  expect_invalid(client_->WatchVmEvents(
                     watch, [](const v1::VmEvent&) { return true; }, Acme()),
                 "cursor");

  EXPECT_TRUE(fake_.calls().empty());
}

TEST_F(VmApiTest, WatchVmEventsStreamsUntilTheClientCancels) {
  v1::WatchVmEventsRequest request;
  request.set_vm_id(ValidId());
  request.set_cursor("41");
  std::vector<v1::VmEvent> events;
  base::Status status = client_->WatchVmEvents(
      request,
      [&](const v1::VmEvent& e) {
        events.push_back(e);
        return events.size() < 3;  // the third one cancels the stream
      },
      Acme());
  EXPECT_TRUE(status.ok()) << status.ToString();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(fake_.seen().watch.vm_id, ValidId());
  EXPECT_EQ(fake_.seen().watch.after_seq, std::optional<int64_t>(41));

  EXPECT_EQ(events[0].cursor(), "7");
  EXPECT_EQ(events[1].cursor(), "8");
  EXPECT_EQ(events[2].cursor(), "9");
  EXPECT_EQ(events[0].vm_id(), "vm-watched");
  EXPECT_EQ(events[0].from_state(), v1::VM_STATE_UNSPECIFIED);  // the creation event
  EXPECT_EQ(events[0].to_state(), v1::VM_STATE_CREATED);
  EXPECT_EQ(events[1].from_state(), v1::VM_STATE_CREATED);
  EXPECT_EQ(events[1].to_state(), v1::VM_STATE_DELETED);
  EXPECT_EQ(events[1].reason(), v1::TRANSITION_REASON_GUEST_SHUTDOWN);
  EXPECT_EQ(events[1].message(), "event 8");
  EXPECT_EQ(events[1].time().seconds(), 1'700'000'000);
  EXPECT_EQ(events[1].time().nanos(), 8);

  // The client went away: the service's watch ends (cancelled, or its next write failed) rather
  // than running to its 30 s bound.
  auto end = fake_.WaitForWatchEnd(std::chrono::seconds(60));
  ASSERT_TRUE(end.has_value());
  EXPECT_NE(*end, "timeout");
}

TEST_F(VmApiTest, WatchVmEventsEndsAtTheDeadline) {
  rpc::CallOptions options = Acme();
  options.timeout = std::chrono::milliseconds(300);
  int received = 0;
  base::Status status = client_->WatchVmEvents(
      {}, [&](const v1::VmEvent&) { return ++received > 0; }, options);
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status.ToString();
  EXPECT_GT(received, 0);
  auto end = fake_.WaitForWatchEnd(std::chrono::seconds(60));
  ASSERT_TRUE(end.has_value());
  EXPECT_NE(*end, "timeout");
  EXPECT_FALSE(fake_.seen().watch.after_seq.has_value());
  EXPECT_TRUE(fake_.seen().watch.vm_id.empty());
}

TEST_F(VmApiTest, ConnectJsonOverH2cConvertsTheSame) {
  rpc::ClientOptions options;
  options.target = address_;
  options.codec = rpc::Codec::kJson;
  options.transport = rpc::ClientOptions::Transport::kH2c;
  options.headers.Add("authorization", "Bearer dev_customer_json-co");
  auto rpc_client = rpc::Client::Create(options);
  ASSERT_TRUE(rpc_client.ok());
  v1::VmServiceClient client(rpc_client->get());

  v1::CreateVmRequest request;
  *request.mutable_config() = FullConfig();
  auto response = client.CreateVm(request);
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_TRUE(MessageDifferencer::Equals(request.config(), response->vm().config()));
  EXPECT_EQ(response->vm().created_at().nanos(), 1);
  EXPECT_EQ(fake_.calls().at(0).caller.customer_id, "json-co");

  std::vector<v1::VmEvent> events;
  ASSERT_TRUE(client
                  .WatchVmEvents({},
                                 [&](const v1::VmEvent& e) {
                                   events.push_back(e);
                                   return events.size() < 2;
                                 })
                  .ok());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].to_state(), v1::VM_STATE_DELETED);
  EXPECT_EQ(events[1].cursor(), "8");
}

TEST(RegisterVmApiTest, RefusesNullDependencies) {
  rpc::Router router;
  auth::AuthOptions options;
  options.allow_dev_tokens = true;
  auto authenticator = auth::Authenticator::Create(options);
  ASSERT_TRUE(authenticator.ok());
  EXPECT_EQ(RegisterVmApi(router, nullptr, authenticator->get()).code(),
            StatusCode::kInvalidArgument);
  FakeVmService fake;
  EXPECT_EQ(RegisterVmApi(router, &fake, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(AddHealthRoutes(router, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(RegisterVmApi(router, &fake, authenticator->get()).ok());
  EXPECT_EQ(RegisterVmApi(router, &fake, authenticator->get()).code(), StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace metald::api

// VmService against the fake backend (backend/testing) and a temp-file SQLite store; one test
// group uses net::Network over a scripted command runner.
#include "metald/service/vm_service.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "metald/backend/testing/fake_backend.h"
#include "metald/model/vm_id.h"
#include "metald/net/testing/fault_injecting_runner.h"
#include "metald/observe/testing/log_capture.h"
#include "metald/service/internal/vm_locks.h"

namespace metald::service {
namespace {

namespace fs = std::filesystem;
using backend::testing::FakeBackend;
using base::StatusCode;
using model::TransitionReason;
using model::VmOp;
using model::VmState;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;

constexpr auto kLongWait = 60s;  // Only to avoid hangs; never asserted on.

std::string MakeTempDir() {
  std::string tmpl = "/tmp/svctest-XXXXXX";
  char* d = ::mkdtemp(tmpl.data());
  EXPECT_NE(d, nullptr);
  return tmpl;
}

void Touch(const std::string& path) { std::ofstream(path) << "x"; }

// The transition log is a chain: every row starts where the previous one ended, and every step is
// allowed by the state machine.
void ExpectValidLog(const std::vector<store::TransitionRecord>& log) {
  ASSERT_FALSE(log.empty());
  EXPECT_FALSE(log[0].from.has_value());
  EXPECT_EQ(log[0].to, VmState::kCreating);
  for (size_t i = 1; i < log.size(); ++i) {
    ASSERT_TRUE(log[i].from.has_value()) << i;
    EXPECT_EQ(*log[i].from, log[i - 1].to) << "row " << i;
    EXPECT_TRUE(model::CheckTransition(*log[i].from, log[i].to).ok())
        << model::StateName(*log[i].from) << " -> " << model::StateName(log[i].to);
  }
}

class VmServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    images_ = dir_ + "/images";
    vm_root_ = dir_ + "/vms";
    fs::create_directories(images_);
    Touch(images_ + "/vmlinuz");
    Touch(images_ + "/initrd");
    Touch(images_ + "/disk.img");
    Touch(dir_ + "/outside");
    store::DatabaseOptions db;
    db.path = dir_ + "/metald.db";
    auto repo = store::VmRepository::Open(db);
    ASSERT_TRUE(repo.ok()) << repo.status().ToString();
    repo_ = std::move(repo).value();
    logs_ = std::make_shared<observe::testing::CapturingLogSink>();
  }

  void TearDown() override {
    service_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  ServiceOptions Options() {
    ServiceOptions o;
    o.vm_root = vm_root_;
    o.image_roots = {images_};
    o.monitor_interval = 10ms;
    o.poll_interval = 20ms;
    o.logger = observe::Logger(observe::LoggerOptions{observe::Level::kInfo, logs_, nullptr});
    return o;
  }

  void Start(std::optional<ServiceOptions> options = std::nullopt) {
    ServiceDeps deps;
    deps.repository = repo_.get();
    deps.backend = &backend_;
    deps.network = network_;
    auto s = StartVmService(deps, options ? *options : Options());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    service_ = std::move(s).value();
  }

  model::VmSpec Spec() {
    model::VmSpec s;
    s.cpu.vcpu_count = 1;
    s.memory.size_bytes = 128ull << 20;
    s.boot.kernel_path = images_ + "/vmlinuz";
    s.boot.initrd_path = images_ + "/initrd";
    s.boot.kernel_args = "quiet";
    model::StorageSpec d;
    d.id = "root";
    d.path = images_ + "/disk.img";
    d.root = true;
    s.storage.push_back(d);
    return s;
  }

  std::string Create(const Caller& c) {
    CreateVmRequest req;
    req.spec = Spec();
    auto r = service_->CreateVm(c, req);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->vm.id : "";
  }

  VmState StateOf(const std::string& id, const Caller& c) {
    auto v = service_->GetVmInfo(c, {id});
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? v->state : VmState::kDeleted;
  }

  // A new VM of customer A in `state` (CREATED, RUNNING, PAUSED, STOPPED or FAILED).
  std::string VmIn(VmState state) {
    std::string id = Create(a_);
    if (state == VmState::kCreated) return id;
    if (state == VmState::kFailed) {
      backend_.FailNext(FakeBackend::Op::kBoot, base::InternalError("boom"), 1, id);
      EXPECT_FALSE(service_->BootVm(a_, {id}).ok());
      EXPECT_EQ(StateOf(id, a_), VmState::kFailed);
      return id;
    }
    EXPECT_TRUE(service_->BootVm(a_, {id}).ok());
    if (state == VmState::kPaused) {
      EXPECT_TRUE(service_->PauseVm(a_, {id}).ok());
    }
    if (state == VmState::kStopped) {
      ShutdownVmRequest req{id, true};
      EXPECT_TRUE(service_->ShutdownVm(a_, req).ok());
    }
    EXPECT_EQ(StateOf(id, a_), state);
    return id;
  }

  base::Status RunOp(VmOp op, const Caller& c, const std::string& id) {
    switch (op) {
      case VmOp::kBoot:
        return service_->BootVm(c, {id}).status();
      case VmOp::kPause:
        return service_->PauseVm(c, {id}).status();
      case VmOp::kResume:
        return service_->ResumeVm(c, {id}).status();
      case VmOp::kReboot:
        return service_->RebootVm(c, {id}).status();
      case VmOp::kShutdown:
        return service_->ShutdownVm(c, {id}).status();
      case VmOp::kDelete:
        return service_->DeleteVm(c, {id});
    }
    return base::InternalError("unreachable");
  }

  bool VmRootEmpty() { return !fs::exists(vm_root_) || fs::is_empty(vm_root_); }

  std::string dir_, images_, vm_root_;
  std::unique_ptr<store::VmRepository> repo_;
  std::shared_ptr<observe::testing::CapturingLogSink> logs_;
  FakeBackend backend_;
  net::Network* network_ = nullptr;
  std::unique_ptr<VmService> service_;
  Caller a_{"cust-a", std::nullopt, nullptr};
  Caller b_{"cust-b", std::nullopt, nullptr};
};

TEST_F(VmServiceTest, FullLifecycle) {
  Start();
  EXPECT_TRUE(service_->Ready().ok());
  CreateVmRequest req;
  req.spec = Spec();
  auto created = service_->CreateVm(a_, req);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_TRUE(created->created);
  const std::string id = created->vm.id;
  EXPECT_TRUE(model::IsValidVmId(id)) << id;
  EXPECT_EQ(created->vm.state, VmState::kCreated);
  EXPECT_EQ(created->vm.customer_id, "cust-a");
  EXPECT_EQ(created->vm.spec, Spec());
  EXPECT_NE(created->vm.pid, 0);
  EXPECT_EQ(created->vm.incarnation, 1);
  EXPECT_EQ(created->vm.booted_unix_ns, 0);
  auto fake = backend_.Get(id);
  ASSERT_TRUE(fake.has_value());
  EXPECT_EQ(fake->last_create.vm_dir, vm_root_ + "/" + id);
  EXPECT_EQ(fake->last_create.spec.console.log_file, vm_root_ + "/" + id + "/console.log");
  EXPECT_TRUE(fs::is_directory(vm_root_ + "/" + id));

  auto st = service_->BootVm(a_, {id});
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->state, VmState::kRunning);
  auto info = service_->GetVmInfo(a_, {id});
  ASSERT_TRUE(info.ok());
  EXPECT_GT(info->booted_unix_ns, 0);
  EXPECT_EQ(info->state_reason, TransitionReason::kUserRequest);

  ASSERT_EQ(service_->PauseVm(a_, {id})->state, VmState::kPaused);
  EXPECT_EQ(backend_.Get(id)->state, VmState::kPaused);
  ASSERT_EQ(service_->ResumeVm(a_, {id})->state, VmState::kRunning);
  ASSERT_EQ(service_->RebootVm(a_, {id})->state, VmState::kRunning);
  EXPECT_EQ(backend_.calls(FakeBackend::Op::kReboot), 1);

  auto down = service_->ShutdownVm(a_, {id, false, 5s});
  ASSERT_TRUE(down.ok()) << down.status().ToString();
  EXPECT_EQ(down->state, VmState::kStopped);
  EXPECT_TRUE(down->graceful);
  info = service_->GetVmInfo(a_, {id});
  EXPECT_EQ(info->state_reason, TransitionReason::kGuestShutdown);
  EXPECT_EQ(info->pid, 0);
  EXPECT_EQ(info->incarnation, 1);

  // Boot of a STOPPED VM starts a new VMM process: a new incarnation.
  ASSERT_TRUE(service_->BootVm(a_, {id}).ok());
  EXPECT_EQ(backend_.calls(FakeBackend::Op::kCreate), 2);
  info = service_->GetVmInfo(a_, {id});
  EXPECT_EQ(info->incarnation, 2);
  EXPECT_NE(info->pid, 0);

  auto forced = service_->ShutdownVm(a_, {id, true});
  ASSERT_TRUE(forced.ok());
  EXPECT_FALSE(forced->graceful);
  EXPECT_EQ(service_->GetVmInfo(a_, {id})->state_reason, TransitionReason::kUserRequest);

  ASSERT_TRUE(service_->DeleteVm(a_, {id}).ok());
  EXPECT_EQ(service_->GetVmInfo(a_, {id}).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(backend_.Has(id));
  EXPECT_FALSE(fs::exists(vm_root_ + "/" + id));
  auto log = repo_->Transitions(id);
  ASSERT_TRUE(log.ok());
  ExpectValidLog(*log);
  EXPECT_EQ(log->back().to, VmState::kDeleted);

  // One log line per transition, with vm, customer, from, to and reason.
  int lines = 0;
  for (const auto& r : logs_->records()) {
    if (r.message != "VM state changed" || r.Get("vm_id") != id) continue;
    ++lines;
    EXPECT_EQ(r.Get("customer_id"), "cust-a");
    EXPECT_TRUE(r.Get("from").has_value());
    EXPECT_TRUE(r.Get("to").has_value());
    EXPECT_TRUE(r.Get("reason").has_value());
  }
  EXPECT_EQ(lines, static_cast<int>(log->size()));
}

TEST_F(VmServiceTest, GracefulShutdownThatTimesOutIsRecordedAsTimeout) {
  Start();
  std::string id = VmIn(VmState::kRunning);
  backend_.set_guest_honours_powerdown(false);
  auto r = service_->ShutdownVm(a_, {id, false, 10ms});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->graceful);
  auto info = service_->GetVmInfo(a_, {id});
  EXPECT_EQ(info->state, VmState::kStopped);
  EXPECT_EQ(info->state_reason, TransitionReason::kTimeout);
  EXPECT_EQ(service_->ShutdownVm(a_, {id, false, 0ms}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(VmServiceTest, ForbiddenOperationsNameTheState) {
  Start();
  const VmState reachable[] = {VmState::kCreated, VmState::kRunning, VmState::kPaused,
                               VmState::kStopped, VmState::kFailed};
  int forbidden = 0;
  for (VmState state : reachable) {
    for (VmOp op : model::kAllVmOps) {
      std::string id = VmIn(state);
      base::Status st = RunOp(op, a_, id);
      if (model::CheckOperation(op, state).ok()) {
        EXPECT_TRUE(st.ok()) << model::OpName(op) << " in " << model::StateName(state) << ": "
                             << st.ToString();
        continue;
      }
      ++forbidden;
      EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition)
          << model::OpName(op) << " in " << model::StateName(state);
      EXPECT_THAT(st.message(), HasSubstr(std::string(model::StateName(state))));
      EXPECT_EQ(StateOf(id, a_), state) << "a refused operation changed the state";
    }
  }
  EXPECT_GT(forbidden, 10);
}

TEST_F(VmServiceTest, DeleteWithForceShutsDownFirst) {
  Start();
  for (VmState state : {VmState::kRunning, VmState::kPaused}) {
    std::string id = VmIn(state);
    EXPECT_EQ(service_->DeleteVm(a_, {id, false}).code(), StatusCode::kFailedPrecondition);
    ASSERT_TRUE(service_->DeleteVm(a_, {id, true}).ok());
    EXPECT_FALSE(backend_.Has(id));
    auto log = repo_->Transitions(id);
    ExpectValidLog(*log);
    std::vector<VmState> tail;
    for (size_t i = log->size() - 4; i < log->size(); ++i) tail.push_back((*log)[i].to);
    EXPECT_EQ(tail, (std::vector<VmState>{VmState::kShuttingDown, VmState::kStopped,
                                          VmState::kDeleting, VmState::kDeleted}));
  }
  EXPECT_TRUE(VmRootEmpty());
}

TEST_F(VmServiceTest, OtherCustomersVmIsNotFound) {
  Start();
  std::string id = VmIn(VmState::kRunning);
  for (VmOp op : model::kAllVmOps) {
    base::Status st = RunOp(op, b_, id);
    EXPECT_EQ(st.code(), StatusCode::kNotFound) << model::OpName(op) << ": " << st.ToString();
    EXPECT_EQ(st.message(), "VM " + id + " not found");
  }
  EXPECT_EQ(service_->DeleteVm(b_, {id, true}).code(), StatusCode::kNotFound);
  EXPECT_EQ(service_->GetVmInfo(b_, {id}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(service_->WaitVm(b_, {id, {VmState::kRunning}, 1s}).status().code(),
            StatusCode::kNotFound);
  WatchVmEventsRequest w;
  w.vm_id = id;
  w.after_seq = 0;
  EXPECT_EQ(service_->WatchVmEvents(b_, w, [](const VmEvent&) { return true; }).code(),
            StatusCode::kNotFound);
  auto list = service_->ListVms(b_, {});
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->vms.empty());
  // B's watch of all its VMs never shows A's events.
  Caller b = b_;
  b.deadline = std::chrono::steady_clock::now() + 50ms;
  WatchVmEventsRequest all;
  all.after_seq = 0;
  int seen = 0;
  EXPECT_TRUE(service_->WatchVmEvents(b, all, [&](const VmEvent&) { return ++seen, true; }).ok());
  EXPECT_EQ(seen, 0);
  // Nothing happened to A's VM.
  EXPECT_EQ(StateOf(id, a_), VmState::kRunning);
  auto mine = service_->ListVms(a_, {});
  ASSERT_EQ(mine->vms.size(), 1u);
}

TEST_F(VmServiceTest, BadConfigsAreRejectedAndLeaveNothing) {
  Start();
  struct Case {
    std::string name;
    std::function<void(model::VmSpec&)> mutate;
    std::string field;
  };
  std::vector<Case> cases = {
      {"zero vcpus", [](model::VmSpec& s) { s.cpu.vcpu_count = 0; }, "cpu.vcpu_count"},
      {"absurd memory", [](model::VmSpec& s) { s.memory.size_bytes = 1ull << 50; }, "memory"},
      {"kernel outside roots", [this](model::VmSpec& s) { s.boot.kernel_path = dir_ + "/outside"; },
       "boot.kernel_path"},
      {"dot-dot", [this](model::VmSpec& s) { s.boot.kernel_path = images_ + "/../outside"; },
       "boot.kernel_path"},
      {"missing kernel", [this](model::VmSpec& s) { s.boot.kernel_path = images_ + "/nope"; },
       "boot.kernel_path"},
      {"missing initrd", [this](model::VmSpec& s) { s.boot.initrd_path = images_ + "/nope"; },
       "boot.initrd_path"},
      {"missing disk", [this](model::VmSpec& s) { s.storage[0].path = images_ + "/nope"; },
       "storage[0].path"},
      {"network while disabled",
       [](model::VmSpec& s) {
         model::NetworkSpec n;
         n.id = "eth0";
         s.network.push_back(n);
       },
       "network"},
      {"console log outside the VM dir", [](model::VmSpec& s) { s.console.log_file = "../x.log"; },
       "console.log_file"},
  };
  for (const Case& c : cases) {
    CreateVmRequest req;
    req.spec = Spec();
    c.mutate(req.spec);
    auto r = service_->CreateVm(a_, req);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(r.status().message(), HasSubstr(c.field)) << c.name;
  }
  CreateVmRequest long_key;
  long_key.spec = Spec();
  long_key.idempotency_key = std::string(129, 'k');
  EXPECT_EQ(service_->CreateVm(a_, long_key).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(repo_->ListAll()->empty());
  EXPECT_TRUE(backend_.List().empty());
  EXPECT_EQ(backend_.calls(FakeBackend::Op::kCreate), 0);
  EXPECT_TRUE(VmRootEmpty());
}

TEST_F(VmServiceTest, BackendFailureAtCreateLeavesNothing) {
  Start();
  backend_.FailNext(FakeBackend::Op::kCreate, base::UnavailableError("VMM would not start"));
  CreateVmRequest req;
  req.spec = Spec();
  auto r = service_->CreateVm(a_, req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), StartsWith("CreateVm vm-"));
  EXPECT_THAT(r.status().message(), HasSubstr("VMM would not start"));
  EXPECT_TRUE(repo_->ListAll()->empty());
  EXPECT_TRUE(backend_.List().empty());
  EXPECT_TRUE(VmRootEmpty());
  EXPECT_TRUE(service_->ListVms(a_, {})->vms.empty());
  // The (deleted) VM's history is a valid chain ending in DELETED.
  auto events = repo_->EventsSince("cust-a", 0, 100);
  ASSERT_FALSE(events->empty());
  auto log = repo_->Transitions(events->front().vm_id);
  ExpectValidLog(*log);
  EXPECT_EQ(log->back().to, VmState::kDeleted);
  // A later create works.
  EXPECT_FALSE(Create(a_).empty());
}

TEST_F(VmServiceTest, BackendFailureAtBootMovesToFailed) {
  Start();
  std::string id = Create(a_);
  backend_.FailNext(FakeBackend::Op::kBoot, base::InternalError("cont: guest exploded"));
  auto r = service_->BootVm(a_, {id});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  EXPECT_THAT(r.status().message(), StartsWith("BootVm " + id + ": "));
  auto info = service_->GetVmInfo(a_, {id});
  EXPECT_EQ(info->state, VmState::kFailed);
  EXPECT_EQ(info->state_reason, TransitionReason::kBackendError);
  // The customer sees no VMM internals.
  EXPECT_THAT(info->state_message, ::testing::Not(HasSubstr("exploded")));
  auto log = repo_->Transitions(id);
  EXPECT_THAT(log->back().detail, HasSubstr("guest exploded"));
  ASSERT_TRUE(service_->DeleteVm(a_, {id}).ok());
  EXPECT_TRUE(VmRootEmpty());
}

TEST_F(VmServiceTest, ConcurrentCallsOnOneVmSerialise) {
  Start();
  std::string id = VmIn(VmState::kRunning);
  std::atomic<int> ok{0}, refused{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 15; ++i) {
        base::Status st = (t + i) % 2 == 0 ? service_->PauseVm(a_, {id}).status()
                                           : service_->ResumeVm(a_, {id}).status();
        if (st.ok()) {
          ++ok;
        } else if (st.code() == StatusCode::kFailedPrecondition) {
          ++refused;
        } else {
          ++other;
          ADD_FAILURE() << st.ToString();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_GT(ok.load(), 0);
  VmState final_state = StateOf(id, a_);
  ASSERT_TRUE(final_state == VmState::kRunning || final_state == VmState::kPaused);
  EXPECT_EQ(backend_.Get(id)->state, final_state);
  auto log = repo_->Transitions(id);
  ExpectValidLog(*log);
  // create(2) + boot(2) + two rows per successful call.
  EXPECT_EQ(log->size(), 4u + 2u * ok.load());
}

TEST_F(VmServiceTest, CallsOnDifferentVmsRunInParallel) {
  Start();
  std::string a = Create(a_);
  std::string b = Create(a_);
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  backend_.SetHook(FakeBackend::Op::kBoot, [&, a](std::string_view vm) {
    if (vm == a) {
      entered.set_value();
      released.wait();
    }
  });
  auto boot_a = std::async(std::launch::async, [&] { return service_->BootVm(a_, {a}); });
  entered.get_future().wait();
  // A is stuck in its backend Boot; B boots all the same.
  auto rb = service_->BootVm(a_, {b});
  ASSERT_TRUE(rb.ok()) << rb.status().ToString();
  EXPECT_EQ(rb->state, VmState::kRunning);
  // Reads do not wait for A's lock.
  EXPECT_EQ(StateOf(a, a_), VmState::kBooting);
  EXPECT_EQ(service_->ListVms(a_, {})->vms.size(), 2u);
  // A lifecycle call on A waits for the lock until its deadline.
  Caller hurried = a_;
  hurried.deadline = std::chrono::steady_clock::now() + 30ms;
  auto busy = service_->PauseVm(hurried, {a});
  EXPECT_EQ(busy.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(busy.status().message(), "VM " + a + " is busy");
  Caller cancelled = a_;
  cancelled.cancelled = [] { return true; };
  EXPECT_EQ(service_->PauseVm(cancelled, {a}).status().code(), StatusCode::kCancelled);
  release.set_value();
  auto ra = boot_a.get();
  ASSERT_TRUE(ra.ok()) << ra.status().ToString();
  EXPECT_EQ(ra->state, VmState::kRunning);
  backend_.SetHook(FakeBackend::Op::kBoot, nullptr);
}

TEST_F(VmServiceTest, IdempotencyKeyReturnsTheSameVm) {
  Start();
  CreateVmRequest req;
  req.spec = Spec();
  req.idempotency_key = "req-1";
  auto first = service_->CreateVm(a_, req);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->created);
  auto again = service_->CreateVm(a_, req);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->vm.id, first->vm.id);
  EXPECT_EQ(again->vm.state, VmState::kCreated);
  EXPECT_EQ(backend_.calls(FakeBackend::Op::kCreate), 1);
  req.spec.cpu.vcpu_count = 2;
  EXPECT_EQ(service_->CreateVm(a_, req).status().code(), StatusCode::kAlreadyExists);
  // Keys are per customer.
  auto other = service_->CreateVm(b_, req);
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->created);
  EXPECT_EQ(repo_->ListAll()->size(), 2u);
}

TEST_F(VmServiceTest, QuotaPerCustomer) {
  ServiceOptions o = Options();
  o.max_vms_per_customer = 2;
  Start(o);
  CreateVmRequest keyed;
  keyed.spec = Spec();
  keyed.idempotency_key = "k1";
  ASSERT_TRUE(service_->CreateVm(a_, keyed).ok());
  Create(a_);
  CreateVmRequest req;
  req.spec = Spec();
  auto r = service_->CreateVm(a_, req);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  // A retry of an earlier create at the limit still returns its VM.
  auto retry = service_->CreateVm(a_, keyed);
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_FALSE(retry->created);
  keyed.idempotency_key = "k2";
  EXPECT_EQ(service_->CreateVm(a_, keyed).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(repo_->CountByCustomer("cust-a").value(), 2);
  EXPECT_EQ(backend_.List().size(), 2u);
  EXPECT_FALSE(Create(b_).empty());
}

TEST_F(VmServiceTest, MonitorSeesGuestPoweroffAndCrash) {
  Start();
  std::string off = VmIn(VmState::kRunning);
  std::string crash = VmIn(VmState::kPaused);
  ASSERT_TRUE(backend_.SimulateGuestPoweroff(off).ok());
  ASSERT_TRUE(backend_.SimulateCrash(crash, 9).ok());
  auto stopped = service_->WaitVm(a_, {off, {VmState::kStopped, VmState::kFailed}, kLongWait});
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
  EXPECT_EQ(stopped->state, VmState::kStopped);
  EXPECT_EQ(stopped->state_reason, TransitionReason::kGuestShutdown);
  EXPECT_EQ(stopped->pid, 0);
  auto failed = service_->WaitVm(a_, {crash, {VmState::kFailed}, kLongWait});
  ASSERT_TRUE(failed.ok()) << failed.status().ToString();
  EXPECT_EQ(failed->state_reason, TransitionReason::kCrash);
  EXPECT_EQ(failed->state_message, "VMM exited: signal 9");
  // A powered-off VM boots again.
  ASSERT_TRUE(service_->BootVm(a_, {off}).ok());
  EXPECT_EQ(StateOf(off, a_), VmState::kRunning);
  ASSERT_TRUE(service_->DeleteVm(a_, {crash}).ok());
}

TEST_F(VmServiceTest, WaitVmWakesOnTransitionsAndHonoursDeadlines) {
  ServiceOptions o = Options();
  o.poll_interval = 10min;  // Only the service's own notification can wake the waiter in time.
  o.monitor_interval = 10min;
  Start(o);
  std::string id = Create(a_);
  auto waiter = std::async(std::launch::async, [&] {
    return service_->WaitVm(a_, {id, {VmState::kRunning}, kLongWait});
  });
  ASSERT_TRUE(service_->BootVm(a_, {id}).ok());
  auto got = waiter.get();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->state, VmState::kRunning);

  // Already there: at once.
  EXPECT_TRUE(service_->WaitVm(a_, {id, {VmState::kRunning}, 1ms}).ok());
  auto late = service_->WaitVm(a_, {id, {VmState::kStopped}, 20ms});
  EXPECT_EQ(late.status().code(), StatusCode::kDeadlineExceeded);
  Caller past = a_;
  past.deadline = std::chrono::steady_clock::now();
  EXPECT_EQ(service_->WaitVm(past, {id, {VmState::kStopped}, kLongWait}).status().code(),
            StatusCode::kDeadlineExceeded);
  Caller cancelled = a_;
  cancelled.cancelled = [] { return true; };
  EXPECT_EQ(service_->WaitVm(cancelled, {id, {VmState::kStopped}, kLongWait}).status().code(),
            StatusCode::kCancelled);
  EXPECT_EQ(service_->WaitVm(a_, {id, {}, 1s}).status().code(), StatusCode::kInvalidArgument);

  // Deleted while waiting: not_found.
  auto gone = std::async(std::launch::async, [&] {
    return service_->WaitVm(a_, {id, {VmState::kPaused}, kLongWait});
  });
  ASSERT_TRUE(service_->DeleteVm(a_, {id, true}).ok());
  EXPECT_EQ(gone.get().status().code(), StatusCode::kNotFound);
}

TEST_F(VmServiceTest, WatchStreamsNewEventsAndResumes) {
  ServiceOptions o = Options();
  o.poll_interval = 10min;
  Start(o);
  std::string id = Create(a_);
  std::vector<VmEvent> seen;
  // `cancelled` is first polled after the watch has read its cursor and caught up: a signal
  // that the watch is in place (no sleeps).
  std::promise<void> started;
  std::once_flag once;
  Caller watching = a_;
  watching.cancelled = [&] {
    std::call_once(once, [&] { started.set_value(); });
    return false;
  };
  watching.deadline = std::chrono::steady_clock::now() + kLongWait;  // Only against hangs.
  auto watcher = std::async(std::launch::async, [&] {
    WatchVmEventsRequest w;  // after_seq nullopt: only new events.
    return service_->WatchVmEvents(watching, w, [&](const VmEvent& e) {
      seen.push_back(e);
      return e.to != VmState::kRunning;
    });
  });
  started.get_future().wait();
  ASSERT_TRUE(service_->BootVm(a_, {id}).ok());
  ASSERT_TRUE(watcher.get().ok());
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().to, VmState::kRunning);
  for (const VmEvent& e : seen) EXPECT_NE(e.to, VmState::kCreating) << "an old event was sent";

  // From the beginning: the whole history, creation first.
  std::vector<VmEvent> all;
  WatchVmEventsRequest from0;
  from0.vm_id = id;
  from0.after_seq = 0;
  Caller brief = a_;
  brief.deadline = std::chrono::steady_clock::now() + 50ms;
  ASSERT_TRUE(
      service_
          ->WatchVmEvents(brief, from0, [&](const VmEvent& e) { return all.push_back(e), true; })
          .ok());
  ASSERT_EQ(all.size(), 4u);
  EXPECT_FALSE(all[0].from.has_value());
  EXPECT_EQ(all[0].to, VmState::kCreating);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_GT(all[i].seq, all[i - 1].seq);

  // A watch of one VM ends after its deletion.
  std::promise<void> in_place;
  std::once_flag once2;
  Caller watching2 = a_;
  watching2.cancelled = [&] {
    std::call_once(once2, [&] { in_place.set_value(); });
    return false;
  };
  watching2.deadline = std::chrono::steady_clock::now() + kLongWait;
  auto ending = std::async(std::launch::async, [&] {
    WatchVmEventsRequest w;
    w.vm_id = id;
    w.after_seq = all.back().seq;
    std::vector<VmState> to;
    base::Status st = service_->WatchVmEvents(
        watching2, w, [&](const VmEvent& e) { return to.push_back(e.to), true; });
    EXPECT_TRUE(st.ok()) << st.ToString();
    return to;
  });
  in_place.get_future().wait();
  ASSERT_TRUE(service_->DeleteVm(a_, {id, true}).ok());
  std::vector<VmState> tail = ending.get();
  ASSERT_FALSE(tail.empty());
  EXPECT_EQ(tail.back(), VmState::kDeleted);
}

TEST_F(VmServiceTest, RestartRecoversEveryVm) {
  Start();
  std::string created = VmIn(VmState::kCreated);
  std::string running = VmIn(VmState::kRunning);
  std::string paused = VmIn(VmState::kPaused);
  std::string stopped = VmIn(VmState::kStopped);
  std::string failed = VmIn(VmState::kFailed);
  std::string died = VmIn(VmState::kRunning);      // Its VMM dies while metald is down.
  std::string pausing = VmIn(VmState::kRunning);   // Caught in PAUSING, VMM still running.
  std::string booting = VmIn(VmState::kCreated);   // Caught in BOOTING, guest never started.
  std::string deleting = VmIn(VmState::kStopped);  // Caught in DELETING.
  service_.reset();                                // VMMs keep running.
  EXPECT_TRUE(backend_.Has(running));

  ASSERT_TRUE(backend_.SimulateCrash(died, 9).ok());
  ASSERT_TRUE(repo_
                  ->UpdateState(pausing, VmState::kRunning, VmState::kPausing,
                                TransitionReason::kUserRequest)
                  .ok());
  ASSERT_TRUE(repo_
                  ->UpdateState(booting, VmState::kCreated, VmState::kBooting,
                                TransitionReason::kUserRequest)
                  .ok());
  ASSERT_TRUE(repo_
                  ->UpdateState(deleting, VmState::kStopped, VmState::kDeleting,
                                TransitionReason::kUserRequest)
                  .ok());
  store::NewVm half;  // A create cut short before its VMM started.
  half.id = "vm-0000000000halfcreated000000";
  half.customer_id = "cust-a";
  half.spec = Spec();
  ASSERT_TRUE(repo_->Create(half).ok());
  fs::create_directories(vm_root_ + "/" + half.id);
  backend_.SimulateDaemonRestart();

  Start();
  EXPECT_TRUE(service_->Ready().ok());
  EXPECT_EQ(StateOf(created, a_), VmState::kCreated);
  EXPECT_EQ(StateOf(running, a_), VmState::kRunning);
  EXPECT_EQ(StateOf(paused, a_), VmState::kPaused);
  EXPECT_EQ(StateOf(stopped, a_), VmState::kStopped);
  EXPECT_EQ(StateOf(failed, a_), VmState::kFailed);
  auto d = service_->GetVmInfo(a_, {died});
  EXPECT_EQ(d->state, VmState::kFailed);
  EXPECT_EQ(d->state_reason, TransitionReason::kRecovered);
  EXPECT_EQ(d->pid, 0);
  auto p = service_->GetVmInfo(a_, {pausing});
  EXPECT_EQ(p->state, VmState::kRunning);
  EXPECT_EQ(p->state_reason, TransitionReason::kRecovered);
  auto b = service_->GetVmInfo(a_, {booting});
  EXPECT_EQ(b->state, VmState::kFailed);
  EXPECT_EQ(b->state_reason, TransitionReason::kRecovered);
  EXPECT_EQ(service_->GetVmInfo(a_, {deleting}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(repo_->GetAny(half.id).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(vm_root_ + "/" + half.id));
  EXPECT_FALSE(fs::exists(vm_root_ + "/" + deleting));
  for (const std::string& id : {created, running, paused, died, pausing, booting}) {
    auto log = repo_->Transitions(id);
    ExpectValidLog(*log);
    auto fake = backend_.Get(id);
    ASSERT_TRUE(fake.has_value()) << id;
    EXPECT_TRUE(fake->adopted) << id;
  }

  // The adopted VMs are driven as before.
  ASSERT_TRUE(service_->PauseVm(a_, {running}).ok());
  ASSERT_TRUE(service_->ResumeVm(a_, {paused}).ok());
  ASSERT_TRUE(service_->BootVm(a_, {created}).ok());
  ASSERT_TRUE(service_->BootVm(a_, {stopped}).ok());
  for (const std::string& id :
       {created, running, paused, stopped, died, pausing, booting, failed}) {
    ASSERT_TRUE(service_->DeleteVm(a_, {id, true}).ok()) << id;
  }
  EXPECT_TRUE(repo_->ListAll()->empty());
  EXPECT_TRUE(backend_.List().empty());
  EXPECT_EQ(backend_.live_processes(), 0);
  EXPECT_TRUE(VmRootEmpty());
}

TEST_F(VmServiceTest, ListVmsPagesAndFilters) {
  Start();
  std::string c1 = VmIn(VmState::kCreated);
  std::string r1 = VmIn(VmState::kRunning);
  std::string c2 = VmIn(VmState::kCreated);
  Create(b_);
  ListVmsRequest req;
  req.page_size = 2;
  auto p1 = service_->ListVms(a_, req);
  ASSERT_TRUE(p1.ok()) << p1.status().ToString();
  ASSERT_EQ(p1->vms.size(), 2u);
  ASSERT_FALSE(p1->next_page_token.empty());
  req.page_token = p1->next_page_token;
  auto p2 = service_->ListVms(a_, req);
  ASSERT_TRUE(p2.ok()) << p2.status().ToString();
  ASSERT_EQ(p2->vms.size(), 1u);
  EXPECT_TRUE(p2->next_page_token.empty());
  std::vector<std::string> ids = {p1->vms[0].id, p1->vms[1].id, p2->vms[0].id};
  std::vector<std::string> want = {c1, r1, c2};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(ids, want);
  for (const Vm& v : p1->vms) EXPECT_EQ(v.customer_id, "cust-a");

  ListVmsRequest running;
  running.states = {VmState::kRunning};
  auto r = service_->ListVms(a_, running);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->vms.size(), 1u);
  EXPECT_EQ(r->vms[0].id, r1);
  EXPECT_GT(r->vms[0].booted_unix_ns, 0);
  ListVmsRequest bad;
  bad.page_size = -1;
  EXPECT_EQ(service_->ListVms(a_, bad).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(VmServiceTest, ReadyReflectsBackendHealth) {
  Start();
  EXPECT_TRUE(service_->Ready().ok());
  backend_.set_health(base::UnavailableError("qemu missing"));
  base::Status st = service_->Ready();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_THAT(st.message(), HasSubstr("qemu missing"));
}

TEST_F(VmServiceTest, StartValidatesOptions) {
  ServiceDeps deps{repo_.get(), &backend_, nullptr};
  ServiceOptions o = Options();
  o.vm_root = "relative/vms";
  EXPECT_EQ(StartVmService(deps, o).status().code(), StatusCode::kInvalidArgument);
  o = Options();
  o.image_roots.clear();
  EXPECT_THAT(StartVmService(deps, o).status().message(), HasSubstr("image_roots"));
  o = Options();
  o.image_roots = {"images"};
  EXPECT_EQ(StartVmService(deps, o).status().code(), StatusCode::kInvalidArgument);
  deps.backend = nullptr;
  EXPECT_EQ(StartVmService(deps, Options()).status().code(), StatusCode::kInvalidArgument);
}

TEST(VmLocksTest, ExclusiveAndCleanedUp) {
  internal::VmLocks locks;
  {
    auto g = locks.Acquire("vm-1", std::nullopt, nullptr);
    ASSERT_TRUE(g.ok());
    EXPECT_FALSE(locks.TryAcquire("vm-1").has_value());
    EXPECT_TRUE(locks.TryAcquire("vm-2").has_value());
    auto busy = locks.Acquire("vm-1", std::chrono::steady_clock::now() + 10ms, nullptr);
    EXPECT_EQ(busy.status().code(), StatusCode::kDeadlineExceeded);
    EXPECT_EQ(locks.size(), 1u);
  }
  EXPECT_EQ(locks.size(), 0u);
  EXPECT_TRUE(locks.TryAcquire("vm-1").has_value());
}

// --- With net::Network over a pretend host ---

class PretendHostRunner : public net::CommandRunner {
 public:
  base::Result<net::CommandResult> Run(const net::Command& c) override {
    std::string line = c.ToString();
    if (line.rfind("ip link show dev", 0) == 0) return net::CommandResult{1, "", "does not exist"};
    if (line.rfind("nft -j list", 0) == 0) return net::CommandResult{0, "{\"nftables\": []}", ""};
    return net::CommandResult{0, "", ""};
  }
};

class VmServiceNetworkTest : public VmServiceTest {
 protected:
  void SetUp() override {
    VmServiceTest::SetUp();
    auto runner = std::make_unique<net::testing::FaultInjectingRunner>(&host_);
    runner_ = runner.get();
    net::NetworkOptions o;
    o.name_prefix = "tst";
    o.ipv4_cidr = "10.9.0.0/24";
    o.lease_db_path = ":memory:";
    o.logger = observe::Logger(observe::LoggerOptions{observe::Level::kError, nullptr, nullptr});
    auto n = net::Network::Open(std::move(o), std::move(runner));
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    net_ = std::move(n).value();
    network_ = net_.get();
  }
  void TearDown() override {
    VmServiceTest::TearDown();
    net_.reset();
  }

  model::VmSpec NetSpec() {
    model::VmSpec s = Spec();
    model::NetworkSpec n;
    n.id = "eth0";
    s.network.push_back(n);
    return s;
  }

  PretendHostRunner host_;
  net::testing::FaultInjectingRunner* runner_ = nullptr;
  std::unique_ptr<net::Network> net_;
};

TEST_F(VmServiceNetworkTest, CreateSetsUpTheNetworkAndDeleteTearsItDown) {
  Start();
  CreateVmRequest req;
  req.spec = NetSpec();
  auto r = service_->CreateVm(a_, req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Vm& vm = r->vm;
  ASSERT_EQ(vm.network.size(), 1u);
  EXPECT_EQ(vm.network[0].id, "eth0");
  EXPECT_EQ(vm.network[0].ipv4_address, "10.9.0.2/24");
  EXPECT_EQ(vm.network[0].ipv4_gateway, "10.9.0.1");
  EXPECT_EQ(vm.network[0].tap_device, "tap0");
  EXPECT_FALSE(vm.network[0].mac_address.empty());
  EXPECT_EQ(vm.spec.network[0].mac_address, vm.network[0].mac_address);
  // The stored spec is the customer's; the backend got the network's additions.
  EXPECT_EQ(vm.spec.boot.kernel_args, "quiet");
  auto fake = backend_.Get(vm.id);
  ASSERT_TRUE(fake.has_value());
  const backend::CreateRequest& cr = fake->last_create;
  EXPECT_EQ(cr.spec.boot.kernel_args, "quiet metald.net=10.9.0.2/24,10.9.0.1");
  EXPECT_EQ(cr.spec.network[0].mac_address, vm.network[0].mac_address);
  EXPECT_EQ(cr.tap_devices, std::vector<std::string>{"tap0"});
  EXPECT_THAT(cr.netns_path, StartsWith("/run/netns/tst-"));
  EXPECT_TRUE(repo_->GetAny(vm.id)->spec.network[0].mac_address.empty());

  // Shutdown keeps the network; a new VMM gets the same address.
  ASSERT_TRUE(service_->BootVm(a_, {vm.id}).ok());
  ASSERT_TRUE(service_->ShutdownVm(a_, {vm.id, true}).ok());
  ASSERT_TRUE(net_->Lookup(vm.id).ok());
  ASSERT_TRUE(service_->BootVm(a_, {vm.id}).ok());
  EXPECT_EQ(backend_.Get(vm.id)->last_create.spec.boot.kernel_args,
            "quiet metald.net=10.9.0.2/24,10.9.0.1");

  ASSERT_TRUE(service_->DeleteVm(a_, {vm.id, true}).ok());
  EXPECT_EQ(net_->Lookup(vm.id).status().code(), StatusCode::kNotFound);
}

TEST_F(VmServiceNetworkTest, UnsupportedNetworkRequestsAreInvalid) {
  Start();
  CreateVmRequest two;
  two.spec = NetSpec();
  model::NetworkSpec second;
  second.id = "eth1";
  two.spec.network.push_back(second);
  auto r = service_->CreateVm(a_, two);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "network: at most 1 interface is supported");
  CreateVmRequest fixed;
  fixed.spec = NetSpec();
  fixed.spec.network[0].ipv4_address = "10.9.0.50/24";
  r = service_->CreateVm(a_, fixed);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("network[0].ipv4_address"));
  EXPECT_TRUE(repo_->ListAll()->empty());
}

TEST_F(VmServiceNetworkTest, FailuresAfterNetworkSetupLeaveNoLease) {
  Start();
  // The backend fails: the network set up for the VM is torn down again.
  backend_.FailNext(FakeBackend::Op::kCreate, base::InternalError("no VMM today"));
  CreateVmRequest req;
  req.spec = NetSpec();
  EXPECT_FALSE(service_->CreateVm(a_, req).ok());
  // A step of the network setup fails.
  runner_->FailNth(2, net::testing::FaultInjectingRunner::When::kAfter);
  auto r = service_->CreateVm(a_, req);
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), StartsWith("CreateVm vm-"));
  runner_->Disarm();
  EXPECT_TRUE(repo_->ListAll()->empty());
  EXPECT_TRUE(backend_.List().empty());
  EXPECT_TRUE(VmRootEmpty());
  auto leftovers = net_->ListLeftovers();
  ASSERT_TRUE(leftovers.ok());
  EXPECT_TRUE(leftovers->leases.empty()) << leftovers->ToString();
}

// --- Jail wiring (ServiceOptions::jail) with an in-memory cgroup v2 tree ---

// A cgroup v2 tree in memory: enough of CgroupFs for CgroupManager (dirs, control files).
class MemCgroupFs : public process::CgroupFs {
 public:
  std::mutex mu;
  std::set<std::string> dirs{"/cg"};
  std::map<std::string, std::string> files{{"/mounts", "cgroup2 /cg cgroup2 rw,nosuid 0 0\n"},
                                           {"/cg/cgroup.controllers", "cpu memory pids\n"}};
  // Writes to paths ending in this fail (invalid_argument, as the kernel's EINVAL).
  std::string fail_write_suffix;

  base::Status MakeDir(const std::string& path) override {
    std::lock_guard<std::mutex> l(mu);
    if (dirs.count(path)) return base::AlreadyExistsError("mkdir " + path);
    if (!dirs.count(Parent(path))) return base::NotFoundError("mkdir " + path);
    dirs.insert(path);
    return base::OkStatus();
  }
  base::Status RemoveDir(const std::string& path) override {
    std::lock_guard<std::mutex> l(mu);
    if (!dirs.count(path)) return base::NotFoundError("rmdir " + path);
    for (const std::string& d : dirs) {
      if (d.rfind(path + "/", 0) == 0) return base::UnavailableError("rmdir " + path);
    }
    dirs.erase(path);
    for (auto it = files.begin(); it != files.end();) {
      it = it->first.rfind(path + "/", 0) == 0 ? files.erase(it) : std::next(it);
    }
    return base::OkStatus();
  }
  base::Status WriteFile(const std::string& path, std::string_view value) override {
    std::lock_guard<std::mutex> l(mu);
    if (!fail_write_suffix.empty() && path.size() >= fail_write_suffix.size() &&
        path.compare(path.size() - fail_write_suffix.size(), std::string::npos,
                     fail_write_suffix) == 0) {
      return base::InvalidArgumentError("write " + path + ": injected");
    }
    if (!dirs.count(Parent(path))) return base::NotFoundError("open " + path);
    files[path] = std::string(value);
    return base::OkStatus();
  }
  base::Result<std::string> ReadFile(const std::string& path) override {
    std::lock_guard<std::mutex> l(mu);
    auto it = files.find(path);
    if (it != files.end()) return it->second;
    if (Base(path) == "cgroup.procs" && dirs.count(Parent(path))) return std::string();
    return base::NotFoundError("open " + path);
  }
  bool Exists(const std::string& path) override {
    std::lock_guard<std::mutex> l(mu);
    return dirs.count(path) || files.count(path) ||
           ((Base(path) == "memory.swap.max" || Base(path) == "memory.oom.group") &&
            dirs.count(Parent(path)));
  }
  base::Result<std::vector<std::string>> ListDirs(const std::string& path) override {
    std::lock_guard<std::mutex> l(mu);
    if (!dirs.count(path)) return base::NotFoundError("opendir " + path);
    std::vector<std::string> out;
    for (const std::string& d : dirs) {
      if (Parent(d) == path) out.push_back(Base(d));
    }
    return out;
  }
  std::string Get(const std::string& path) {
    std::lock_guard<std::mutex> l(mu);
    auto it = files.find(path);
    return it == files.end() ? "<unset>" : it->second;
  }
  bool HasDir(const std::string& path) {
    std::lock_guard<std::mutex> l(mu);
    return dirs.count(path) > 0;
  }

 private:
  static std::string Parent(const std::string& p) { return p.substr(0, p.rfind('/')); }
  static std::string Base(const std::string& p) { return p.substr(p.rfind('/') + 1); }
};

class VmServiceJailTest : public VmServiceTest {
 protected:
  void SetUp() override {
    VmServiceTest::SetUp();
    process::CgroupOptions co;
    co.root_name = "metald-t";
    co.mounts_file = "/mounts";
    co.fs = &cgfs_;
    auto mgr = process::CgroupManager::Open(co);
    ASSERT_TRUE(mgr.ok()) << mgr.status().ToString();
    cgroups_ = std::move(mgr).value();
  }

  ServiceOptions JailOptions() {
    ServiceOptions o = Options();
    o.jail = true;
    o.jail_memory_overhead_bytes = 32ull << 20;
    return o;
  }

  void StartJailed(std::optional<ServiceOptions> options = std::nullopt) {
    ServiceDeps deps;
    deps.repository = repo_.get();
    deps.backend = &backend_;
    deps.cgroups = cgroups_.get();
    deps.uids = &uids_;
    auto s = StartVmService(deps, options ? *options : JailOptions());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    service_ = std::move(s).value();
  }

  // Jailed VMs may only have read-only disks unless a writable disk directory is configured.
  model::VmSpec ReadOnlySpec() {
    model::VmSpec s = Spec();
    s.storage[0].read_only = true;
    return s;
  }

  std::string CgDir(const std::string& customer, const std::string& id) {
    return "/cg/metald-t/" + customer + "/" + id;
  }

  MemCgroupFs cgfs_;
  std::unique_ptr<process::CgroupManager> cgroups_;
  process::UidAllocator uids_{70000, 70009};
};

TEST_F(VmServiceJailTest, EachVmmRunsJailedInItsOwnCgroupAndUid) {
  StartJailed();
  CreateVmRequest req;
  req.spec = ReadOnlySpec();
  req.spec.cpu.vcpu_count = 2;
  auto created = service_->CreateVm(a_, req);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  const std::string id = created->vm.id;
  std::optional<uid_t> uid = uids_.Find(id);
  ASSERT_TRUE(uid.has_value());
  EXPECT_GE(*uid, 70000u);
  auto fake = backend_.Get(id);
  ASSERT_TRUE(fake.has_value());
  ASSERT_TRUE(fake->last_create.jail.has_value());
  EXPECT_EQ(fake->last_create.jail->uid, *uid);
  EXPECT_EQ(fake->last_create.jail->gid, *uid);
  EXPECT_THAT(fake->last_create.jail->cgroup_procs_files,
              ::testing::ElementsAre(CgDir("cust-a", id) + "/cgroup.procs"));
  // Memory limit = the spec's memory + the overhead; CPU = 2 vCPUs.
  EXPECT_EQ(cgfs_.Get(CgDir("cust-a", id) + "/memory.max"),
            std::to_string((128ull << 20) + (32ull << 20)));
  EXPECT_EQ(cgfs_.Get(CgDir("cust-a", id) + "/cpu.max"), "200000 100000");

  // A second VM gets another uid; a writable disk is refused (no writable disk directory).
  auto second = service_->CreateVm(b_, req);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_NE(uids_.Find(second->vm.id), uid);
  req.spec = Spec();
  auto rw = service_->CreateVm(b_, req);
  EXPECT_EQ(rw.status().code(), StatusCode::kInvalidArgument) << rw.status().ToString();
  EXPECT_THAT(rw.status().message(), HasSubstr("read_only"));
}

TEST_F(VmServiceJailTest, CgroupLivesExactlyWhileAVmmMay) {
  StartJailed();
  CreateVmRequest req;
  req.spec = ReadOnlySpec();
  auto created = service_->CreateVm(a_, req);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  const std::string id = created->vm.id;
  const uid_t uid = *uids_.Find(id);
  ASSERT_TRUE(service_->BootVm(a_, {id}).ok());
  EXPECT_TRUE(cgfs_.HasDir(CgDir("cust-a", id)));
  ShutdownVmRequest down{id, true};
  ASSERT_TRUE(service_->ShutdownVm(a_, down).ok());
  EXPECT_FALSE(cgfs_.HasDir(CgDir("cust-a", id)));
  EXPECT_FALSE(cgfs_.HasDir("/cg/metald-t/cust-a"));
  // Boot again: a new VMM, a new cgroup, the same uid (the TAP and VM directory belong to it).
  ASSERT_TRUE(service_->BootVm(a_, {id}).ok());
  EXPECT_TRUE(cgfs_.HasDir(CgDir("cust-a", id)));
  EXPECT_EQ(backend_.Get(id)->last_create.jail->uid, uid);
  EXPECT_EQ(uids_.Find(id), uid);
  DeleteVmRequest del{id, true};
  ASSERT_TRUE(service_->DeleteVm(a_, del).ok());
  EXPECT_FALSE(cgfs_.HasDir(CgDir("cust-a", id)));
  EXPECT_EQ(uids_.InUse(), 0u);
  auto left = cgroups_->ListLeftovers();
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty());
}

TEST_F(VmServiceJailTest, FailuresLeaveNoCgroupUidOrVm) {
  StartJailed();
  CreateVmRequest req;
  req.spec = ReadOnlySpec();
  // The backend fails after the cgroup was made.
  backend_.FailNext(FakeBackend::Op::kCreate, base::UnavailableError("VMM would not start"));
  auto r = service_->CreateVm(a_, req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(uids_.InUse(), 0u);
  EXPECT_FALSE(cgfs_.HasDir("/cg/metald-t/cust-a"));
  // The cgroup cannot be made: the backend is never called.
  int creates = backend_.calls(FakeBackend::Op::kCreate);
  cgfs_.fail_write_suffix = "memory.max";
  r = service_->CreateVm(a_, req);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("cgroup"));
  EXPECT_EQ(backend_.calls(FakeBackend::Op::kCreate), creates);
  EXPECT_EQ(uids_.InUse(), 0u);
  EXPECT_FALSE(cgfs_.HasDir("/cg/metald-t/cust-a"));
  auto list = service_->ListVms(a_, {});
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->vms.empty());
  EXPECT_TRUE(VmRootEmpty());
  // A uid range used up is resource_exhausted, and leaves nothing either.
  cgfs_.fail_write_suffix.clear();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(service_->CreateVm(a_, req).ok()) << i;
  r = service_->CreateVm(a_, req);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
  list = service_->ListVms(a_, {});
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->vms.size(), 10u);
  // A failed boot of a STOPPED VM removes the cgroup it made.
  std::string id = list->vms[0].id;
  ASSERT_TRUE(service_->BootVm(a_, {id}).ok());
  ShutdownVmRequest down{id, true};
  ASSERT_TRUE(service_->ShutdownVm(a_, down).ok());
  backend_.FailNext(FakeBackend::Op::kCreate, base::UnavailableError("no"), 1, id);
  EXPECT_FALSE(service_->BootVm(a_, {id}).ok());
  EXPECT_FALSE(cgfs_.HasDir(CgDir("cust-a", id)));
}

TEST_F(VmServiceJailTest, WritableDisksOnlyFromTheWritableDiskDirectory) {
  const std::string disks = dir_ + "/images/rw";
  fs::create_directories(disks);
  Touch(disks + "/a.img");
  ServiceOptions o = JailOptions();
  o.jail_writable_disk_dir = disks;
  StartJailed(o);
  CreateVmRequest req;
  req.spec = Spec();  // A writable disk outside the directory.
  auto r = service_->CreateVm(a_, req);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("storage[0]"));
  EXPECT_EQ(backend_.calls(FakeBackend::Op::kCreate), 0);
  if (::geteuid() != 0) GTEST_SKIP() << "chown needs root";
  req.spec.storage[0].path = disks + "/a.img";
  auto created = service_->CreateVm(a_, req);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  const uid_t uid = *uids_.Find(created->vm.id);
  struct stat st {};
  ASSERT_EQ(::stat((disks + "/a.img").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, uid);
  // Another VM may not take a disk a VM's uid owns.
  auto second = service_->CreateVm(b_, req);
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition) << second.status().ToString();
  // Delete gives it back to root.
  ASSERT_TRUE(service_->DeleteVm(a_, {created->vm.id}).ok());
  ASSERT_EQ(::stat((disks + "/a.img").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(uids_.InUse(), 0u);
}

TEST_F(VmServiceJailTest, RestartReservesUidsAndRemovesStrayCgroups) {
  if (::geteuid() != 0) GTEST_SKIP() << "chown of the VM directory needs root";
  StartJailed();
  CreateVmRequest req;
  req.spec = ReadOnlySpec();
  auto created = service_->CreateVm(a_, req);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  const std::string id = created->vm.id;
  const uid_t uid = *uids_.Find(id);
  // What the QEMU backend does for a jailed VM: the VM directory belongs to the VM's uid.
  ASSERT_EQ(::chown((vm_root_ + "/" + id).c_str(), uid, uid), 0);
  ShutdownVmRequest down{id, true};
  ASSERT_TRUE(service_->BootVm(a_, {id}).ok());
  ASSERT_TRUE(service_->ShutdownVm(a_, down).ok());
  service_.reset();
  // A stray group of a VM that no longer exists (a crash between steps).
  ASSERT_TRUE(cgroups_->Create("cust-z", "vm-gone", {64 << 20, 1, 0, {}}).ok());
  process::UidAllocator fresh(70000, 70009);
  ServiceDeps deps;
  deps.repository = repo_.get();
  deps.backend = &backend_;
  deps.cgroups = cgroups_.get();
  deps.uids = &fresh;
  auto s = StartVmService(deps, JailOptions());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  service_ = std::move(s).value();
  EXPECT_EQ(fresh.Find(id), uid);
  EXPECT_FALSE(cgfs_.HasDir("/cg/metald-t/cust-z"));
  ASSERT_TRUE(service_->DeleteVm(a_, {id}).ok());
  EXPECT_EQ(fresh.InUse(), 0u);
}

TEST_F(VmServiceJailTest, JailNeedsItsDeps) {
  ServiceDeps deps;
  deps.repository = repo_.get();
  deps.backend = &backend_;
  auto s = StartVmService(deps, JailOptions());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  ServiceOptions o = JailOptions();
  o.jail_writable_disk_dir = "relative";
  deps.cgroups = cgroups_.get();
  deps.uids = &uids_;
  s = StartVmService(deps, o);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace metald::service

#include "metald/store/repository.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include "metald/model/vm_id.h"

namespace metald::store {
namespace {

namespace fs = std::filesystem;
using model::TransitionReason;
using model::VmState;

model::VmSpec Spec(uint32_t vcpus = 1) {
  model::VmSpec s;
  s.cpu.vcpu_count = vcpus;
  s.boot.kernel_path = "/img/vmlinuz";
  s.metadata["name"] = "test";
  return s;
}

ListRequest Req(std::string customer, int page_size = 0, std::vector<VmState> states = {},
                std::string token = "") {
  ListRequest r;
  r.customer_id = std::move(customer);
  r.page_size = page_size;
  r.states = std::move(states);
  r.page_token = std::move(token);
  return r;
}

NewVm MakeVm(std::string id, std::string customer, std::string key = "") {
  NewVm v;
  v.id = std::move(id);
  v.customer_id = std::move(customer);
  v.spec = Spec();
  v.backend = model::BackendKind::kFirecracker;
  v.idempotency_key = std::move(key);
  return v;
}

// Runs every test against an in-memory and an on-disk database.
class VmRepositoryTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/metald_repo_test_XXXXXX";
    dir_ = mkdtemp(tmpl);
    Reopen();
  }
  void TearDown() override {
    repo_.reset();
    fs::remove_all(dir_);
  }
  bool on_disk() const { return GetParam(); }
  void Reopen() {
    repo_.reset();
    DatabaseOptions db;
    db.path = on_disk() ? dir_ + "/metald.db" : ":memory:";
    RepositoryOptions opts;
    opts.now_unix_ns = [this] { return ++clock_; };
    auto r = VmRepository::Open(db, opts);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    repo_ = std::move(r).value();
  }
  VmRecord MustCreate(const NewVm& vm) {
    auto r = repo_->Create(vm);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(r->created);
    return r->record;
  }
  // Walks `id` through `states` from CREATING with kUserRequest.
  void Walk(const std::string& id, std::initializer_list<VmState> states) {
    VmState from = VmState::kCreating;
    for (VmState to : states) {
      auto r = repo_->UpdateState(id, from, to, TransitionReason::kUserRequest);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      from = to;
    }
  }

  std::string dir_;
  std::atomic<int64_t> clock_{1000};
  std::unique_ptr<VmRepository> repo_;
};

INSTANTIATE_TEST_SUITE_P(Db, VmRepositoryTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "File" : "Memory"; });

TEST_P(VmRepositoryTest, CreateAndGet) {
  VmRecord r = MustCreate(MakeVm("vm-a", "cust-1"));
  EXPECT_EQ(r.id, "vm-a");
  EXPECT_EQ(r.customer_id, "cust-1");
  EXPECT_EQ(r.state, VmState::kCreating);
  EXPECT_EQ(r.backend, model::BackendKind::kFirecracker);
  EXPECT_EQ(r.spec, Spec());
  EXPECT_EQ(r.incarnation, 0);
  EXPECT_EQ(r.process, ProcessInfo{});
  EXPECT_GT(r.created_unix_ns, 1000);
  EXPECT_EQ(r.created_unix_ns, r.updated_unix_ns);

  auto got = repo_->Get("cust-1", "vm-a");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, r);
  EXPECT_EQ(*repo_->GetAny("vm-a"), r);

  EXPECT_EQ(repo_->Create(MakeVm("vm-a", "cust-2")).status().code(),
            base::StatusCode::kAlreadyExists);
  EXPECT_EQ(repo_->Create(MakeVm("", "c")).status().code(), base::StatusCode::kInvalidArgument);
  EXPECT_EQ(repo_->Create(MakeVm("vm-x", "")).status().code(), base::StatusCode::kInvalidArgument);
}

TEST_P(VmRepositoryTest, OtherCustomersVmIsNotFoundLikeAMissingOne) {
  MustCreate(MakeVm("vm-a", "cust-1"));
  auto other = repo_->Get("cust-2", "vm-a");
  auto missing = repo_->Get("cust-2", "vm-zzz");
  ASSERT_FALSE(other.ok());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(other.status(), base::NotFoundError("VM vm-a not found"));
  EXPECT_EQ(missing.status(), base::NotFoundError("VM vm-zzz not found"));
  EXPECT_EQ(repo_->GetAny("vm-zzz").status().code(), base::StatusCode::kNotFound);

  auto page = repo_->List(Req("cust-2"));
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->vms.empty());
  EXPECT_EQ(*repo_->CountByCustomer("cust-1"), 1);
  EXPECT_EQ(*repo_->CountByCustomer("cust-2"), 0);
  EXPECT_EQ(repo_->EventsSince("cust-2", 0, 0)->size(), 0u);
  EXPECT_EQ(repo_->EventsSince("cust-1", 0, 0)->size(), 1u);
}

TEST_P(VmRepositoryTest, IdempotencyKeyIsPerCustomer) {
  VmRecord first = MustCreate(MakeVm("vm-a", "cust-1", "key-1"));
  auto again = repo_->Create(MakeVm("vm-b", "cust-1", "key-1"));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->record, first);
  EXPECT_EQ(repo_->GetAny("vm-b").status().code(), base::StatusCode::kNotFound);

  NewVm different = MakeVm("vm-c", "cust-1", "key-1");
  different.spec.cpu.vcpu_count = 8;
  EXPECT_EQ(repo_->Create(different).status().code(), base::StatusCode::kAlreadyExists);

  MustCreate(MakeVm("vm-d", "cust-2", "key-1"));  // Same key, other customer: independent.
  MustCreate(MakeVm("vm-e", "cust-1"));           // No key: never deduplicated.
  MustCreate(MakeVm("vm-f", "cust-1"));
  EXPECT_EQ(*repo_->CountByCustomer("cust-1"), 3);
}

TEST_P(VmRepositoryTest, UpdateStateIsCompareAndSetAndLogged) {
  MustCreate(MakeVm("vm-a", "cust-1"));
  auto r = repo_->UpdateState("vm-a", VmState::kCreating, VmState::kCreated,
                              TransitionReason::kUserRequest);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->state, VmState::kCreated);
  EXPECT_GT(r->updated_unix_ns, r->created_unix_ns);

  // Wrong expected state: refused, names the actual state, nothing logged.
  auto stale =
      repo_->UpdateState("vm-a", VmState::kCreating, VmState::kFailed, TransitionReason::kCrash);
  EXPECT_EQ(stale.status(),
            base::FailedPreconditionError("VM vm-a is in state CREATED, not CREATING"));
  // A transition the table forbids: refused before touching the database.
  auto forbidden = repo_->UpdateState("vm-a", VmState::kCreated, VmState::kRunning,
                                      TransitionReason::kUserRequest);
  EXPECT_EQ(forbidden.status(),
            base::FailedPreconditionError("Invalid VM state transition from CREATED to RUNNING"));
  EXPECT_EQ(repo_
                ->UpdateState("vm-a", VmState::kDeleting, VmState::kDeleted,
                              TransitionReason::kUserRequest)
                .status()
                .code(),
            base::StatusCode::kFailedPrecondition);
  EXPECT_EQ(repo_
                ->UpdateState("vm-nope", VmState::kCreated, VmState::kBooting,
                              TransitionReason::kUserRequest)
                .status()
                .code(),
            base::StatusCode::kNotFound);

  Walk("vm-a", {});  // no-op
  ASSERT_TRUE(repo_
                  ->UpdateState("vm-a", VmState::kCreated, VmState::kBooting,
                                TransitionReason::kUserRequest)
                  .ok());
  ASSERT_TRUE(repo_
                  ->UpdateState("vm-a", VmState::kBooting, VmState::kRunning,
                                TransitionReason::kUserRequest)
                  .ok());
  ASSERT_TRUE(repo_
                  ->UpdateState("vm-a", VmState::kRunning, VmState::kFailed,
                                TransitionReason::kCrash, "killed by signal 9")
                  .ok());

  auto log = repo_->Transitions("vm-a");
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(log->size(), 5u);
  const std::vector<std::pair<std::optional<VmState>, VmState>> expected = {
      {std::nullopt, VmState::kCreating},
      {VmState::kCreating, VmState::kCreated},
      {VmState::kCreated, VmState::kBooting},
      {VmState::kBooting, VmState::kRunning},
      {VmState::kRunning, VmState::kFailed}};
  for (size_t i = 0; i < expected.size(); ++i) {
    const TransitionRecord& t = (*log)[i];
    EXPECT_EQ(t.from, expected[i].first) << i;
    EXPECT_EQ(t.to, expected[i].second) << i;
    EXPECT_EQ(t.vm_id, "vm-a");
    EXPECT_EQ(t.customer_id, "cust-1");
    if (i > 0) {
      EXPECT_GT(t.seq, (*log)[i - 1].seq);
      EXPECT_GT(t.at_unix_ns, (*log)[i - 1].at_unix_ns);
    }
  }
  EXPECT_EQ(log->back().reason, TransitionReason::kCrash);
  EXPECT_EQ(log->back().detail, "killed by signal 9");
  EXPECT_EQ((*log)[1].reason, TransitionReason::kUserRequest);
  EXPECT_EQ(repo_->GetAny("vm-a")->state, VmState::kFailed);
}

TEST_P(VmRepositoryTest, ConcurrentCasHasExactlyOneWinner) {
  MustCreate(MakeVm("vm-a", "cust-1"));
  Walk("vm-a", {VmState::kCreated, VmState::kBooting, VmState::kRunning});
  for (int round = 0; round < 5; ++round) {
    constexpr int kThreads = 8;
    std::atomic<int> wins{0}, precondition{0}, other{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    // Half try RUNNING -> PAUSING, half RUNNING -> SHUTTING_DOWN: only one may move it.
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        while (!go.load()) std::this_thread::yield();
        auto r = repo_->UpdateState("vm-a", VmState::kRunning,
                                    i % 2 ? VmState::kPausing : VmState::kShuttingDown,
                                    TransitionReason::kUserRequest);
        if (r.ok()) {
          ++wins;
        } else if (r.status().code() == base::StatusCode::kFailedPrecondition) {
          ++precondition;
        } else {
          ++other;
        }
      });
    }
    go = true;
    for (auto& t : threads) t.join();
    EXPECT_EQ(wins.load(), 1);
    EXPECT_EQ(precondition.load(), kThreads - 1);
    EXPECT_EQ(other.load(), 0);
    // Back to RUNNING for the next round.
    VmRecord now = *repo_->GetAny("vm-a");
    if (now.state == VmState::kPausing) {
      ASSERT_TRUE(repo_
                      ->UpdateState("vm-a", VmState::kPausing, VmState::kPaused,
                                    TransitionReason::kUserRequest)
                      .ok());
      ASSERT_TRUE(repo_
                      ->UpdateState("vm-a", VmState::kPaused, VmState::kResuming,
                                    TransitionReason::kUserRequest)
                      .ok());
      ASSERT_TRUE(repo_
                      ->UpdateState("vm-a", VmState::kResuming, VmState::kRunning,
                                    TransitionReason::kUserRequest)
                      .ok());
    } else {
      ASSERT_EQ(now.state, VmState::kShuttingDown);
      ASSERT_TRUE(repo_
                      ->UpdateState("vm-a", VmState::kShuttingDown, VmState::kStopped,
                                    TransitionReason::kUserRequest)
                      .ok());
      ASSERT_TRUE(repo_
                      ->UpdateState("vm-a", VmState::kStopped, VmState::kBooting,
                                    TransitionReason::kUserRequest)
                      .ok());
      ASSERT_TRUE(repo_
                      ->UpdateState("vm-a", VmState::kBooting, VmState::kRunning,
                                    TransitionReason::kUserRequest)
                      .ok());
    }
  }
  // The log holds exactly the winning transitions: 4 (walk+create) + 5 rounds x 4.
  EXPECT_EQ(repo_->Transitions("vm-a")->size(), 4u + 5 * 4);
}

TEST_P(VmRepositoryTest, PaginationWithStateFilter) {
  // 250 VMs of cust-1 (ids in creation order), every third one RUNNING, plus noise of cust-2.
  model::VmIdGenerator::Options id_opts;
  int64_t ms = 1700000000000;
  uint64_t rnd = 0;
  id_opts.now_unix_ms = [&] { return ms++; };
  id_opts.random64 = [&] { return rnd++ * 0x9e3779b97f4a7c15ull; };
  model::VmIdGenerator ids(id_opts);
  std::vector<std::string> all, running;
  for (int i = 0; i < 250; ++i) {
    std::string id = ids.Next();
    MustCreate(MakeVm(id, "cust-1"));
    all.push_back(id);
    if (i % 3 == 0) {
      Walk(id, {VmState::kCreated, VmState::kBooting, VmState::kRunning});
      running.push_back(id);
    }
    if (i % 10 == 0) {
      std::string noise = ids.Next();
      MustCreate(MakeVm(noise, "cust-2"));
      Walk(noise, {VmState::kCreated, VmState::kBooting, VmState::kRunning});
    }
  }

  auto collect = [&](ListRequest req, int* pages) {
    std::vector<std::string> seen;
    *pages = 0;
    for (;;) {
      auto page = repo_->List(req);
      EXPECT_TRUE(page.ok()) << page.status().ToString();
      if (!page.ok()) break;
      ++*pages;
      for (const VmRecord& r : page->vms) {
        EXPECT_EQ(r.customer_id, "cust-1");
        seen.push_back(r.id);
      }
      if (page->next_page_token.empty()) break;
      req.page_token = page->next_page_token;
    }
    return seen;
  };

  int pages = 0;
  EXPECT_EQ(collect(Req("cust-1", 40), &pages), all);
  EXPECT_EQ(pages, 7);  // 6 full pages + 10
  EXPECT_EQ(collect(Req("cust-1", 40, {VmState::kRunning}), &pages), running);
  EXPECT_EQ(pages, 3);  // 84 running: 40 + 40 + 4
  auto created = collect(Req("cust-1", 25, {VmState::kCreating, VmState::kCreated}), &pages);
  EXPECT_EQ(created.size(), all.size() - running.size());

  // Default page size is 50; a huge page size is clamped to 500.
  auto first = repo_->List(Req("cust-1"));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->vms.size(), 50u);
  EXPECT_FALSE(first->next_page_token.empty());
  auto big = repo_->List(Req("cust-1", 100000));
  EXPECT_EQ(big->vms.size(), 250u);
  EXPECT_TRUE(big->next_page_token.empty());

  // Keyset pagination is stable when VMs are deleted between pages.
  auto p1 = repo_->List(Req("cust-1", 100));
  ASSERT_TRUE(p1.ok());
  const std::string doomed = p1->vms[99].id;  // the cursor row itself
  ASSERT_EQ(repo_->GetAny(doomed)->state, VmState::kRunning);
  ASSERT_TRUE(
      repo_->UpdateState(doomed, VmState::kRunning, VmState::kFailed, TransitionReason::kCrash)
          .ok());
  ASSERT_TRUE(repo_
                  ->UpdateState(doomed, VmState::kFailed, VmState::kDeleting,
                                TransitionReason::kUserRequest)
                  .ok());
  ASSERT_TRUE(repo_->Delete(doomed).ok());
  auto p2 = repo_->List(Req("cust-1", 100, {}, p1->next_page_token));
  ASSERT_TRUE(p2.ok());
  EXPECT_EQ(p2->vms.front().id, all[100]);

  // Bad tokens and arguments.
  EXPECT_EQ(repo_->List(Req("cust-1", 0, {}, "!!")).status().code(),
            base::StatusCode::kInvalidArgument);
  EXPECT_EQ(repo_->List(Req("cust-1", 0, {VmState::kRunning}, p1->next_page_token)).status(),
            base::InvalidArgumentError("page_token was issued for a different state filter"));
  EXPECT_EQ(repo_->List(Req("cust-1", -1)).status().code(), base::StatusCode::kInvalidArgument);
  EXPECT_EQ(repo_->List(Req("")).status().code(), base::StatusCode::kInvalidArgument);
}

TEST_P(VmRepositoryTest, UpdateProcessCountsIncarnations) {
  MustCreate(MakeVm("vm-a", "cust-1"));
  ProcessInfo p{1234, 99, "/run/metald/vm-a/api.sock", "/srv/jail/vm-a"};
  auto r = repo_->UpdateProcess("vm-a", p);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->process, p);
  EXPECT_EQ(r->incarnation, 1);
  EXPECT_EQ(repo_->UpdateProcess("vm-a", p)->incarnation, 1);  // same process: no change
  ProcessInfo cleared;
  r = repo_->UpdateProcess("vm-a", cleared);
  EXPECT_EQ(r->incarnation, 1);
  EXPECT_EQ(r->process, cleared);
  EXPECT_EQ(repo_->UpdateProcess("vm-a", p)->incarnation, 2);  // relaunch, even with same pid
  p.start_time = 100;                                          // pid reused by a different process
  EXPECT_EQ(repo_->UpdateProcess("vm-a", p)->incarnation, 3);
  EXPECT_EQ(repo_->UpdateProcess("vm-nope", p).status().code(), base::StatusCode::kNotFound);
}

TEST_P(VmRepositoryTest, DeleteRequiresDeletingAndKeepsLog) {
  MustCreate(MakeVm("vm-a", "cust-1", "k"));
  Walk("vm-a", {VmState::kCreated});
  EXPECT_EQ(repo_->Delete("vm-a").message(),
            "Cannot remove VM vm-a in state CREATED; it must be DELETING");
  Walk("vm-a", {});
  ASSERT_TRUE(repo_
                  ->UpdateState("vm-a", VmState::kCreated, VmState::kDeleting,
                                TransitionReason::kUserRequest)
                  .ok());
  ASSERT_TRUE(repo_->Delete("vm-a").ok());
  EXPECT_EQ(repo_->GetAny("vm-a").status().code(), base::StatusCode::kNotFound);
  EXPECT_EQ(repo_->Delete("vm-a").code(), base::StatusCode::kNotFound);
  auto log = repo_->Transitions("vm-a");
  ASSERT_EQ(log->size(), 4u);
  EXPECT_EQ(log->back().from, VmState::kDeleting);
  EXPECT_EQ(log->back().to, VmState::kDeleted);
  // The idempotency key is free again once the VM is gone.
  EXPECT_TRUE(repo_->Create(MakeVm("vm-b", "cust-1", "k"))->created);
}

TEST_P(VmRepositoryTest, EventsSinceIsAResumeCursor) {
  EXPECT_EQ(*repo_->LastSeq(), 0);
  MustCreate(MakeVm("vm-a", "cust-1"));
  MustCreate(MakeVm("vm-b", "cust-2"));
  Walk("vm-a", {VmState::kCreated, VmState::kBooting});
  auto all = repo_->EventsSince("", 0, 0);
  ASSERT_EQ(all->size(), 4u);
  // LastSeq is where a cursor-less watch starts: nothing of the past is after it.
  EXPECT_EQ(*repo_->LastSeq(), all->back().seq);
  EXPECT_TRUE(repo_->EventsSince("", *repo_->LastSeq(), 0)->empty());
  auto tail = repo_->EventsSince("", (*all)[1].seq, 0);
  ASSERT_EQ(tail->size(), 2u);
  EXPECT_EQ(tail->front(), (*all)[2]);
  auto limited = repo_->EventsSince("cust-1", 0, 2);
  ASSERT_EQ(limited->size(), 2u);
  EXPECT_EQ((*limited)[1].to, VmState::kCreated);
}

TEST_P(VmRepositoryTest, RestartKeepsVmsAndStates) {
  if (!on_disk()) GTEST_SKIP() << "an in-memory database does not survive a close";
  MustCreate(MakeVm("vm-a", "cust-1", "k"));
  MustCreate(MakeVm("vm-b", "cust-2"));
  Walk("vm-a", {VmState::kCreated, VmState::kBooting, VmState::kRunning});
  ASSERT_TRUE(repo_->UpdateProcess("vm-a", {77, 5, "/s", "/j"}).ok());
  auto before = repo_->ListAll();
  auto log_before = repo_->Transitions("vm-a");
  ASSERT_TRUE(before.ok());

  Reopen();
  auto after = repo_->ListAll();
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(*after, *before);
  ASSERT_EQ(after->size(), 2u);
  EXPECT_EQ((*after)[0].state, VmState::kRunning);
  EXPECT_EQ((*after)[0].process.pid, 77);
  EXPECT_EQ((*after)[1].state, VmState::kCreating);
  EXPECT_EQ(*repo_->Transitions("vm-a"), *log_before);
  EXPECT_EQ(repo_->database()->schema_version(), 1);
  // The idempotency index survived too.
  EXPECT_FALSE(repo_->Create(MakeVm("vm-c", "cust-1", "k"))->created);
  // And a new transition continues the sequence.
  auto r = repo_->UpdateState("vm-a", VmState::kRunning, VmState::kStopped,
                              TransitionReason::kGuestShutdown);
  ASSERT_TRUE(r.ok());
  EXPECT_GT(repo_->Transitions("vm-a")->back().seq, log_before->back().seq);
}

TEST(VmRepositoryFullDiskTest, CreateFailsWithResourceExhausted) {
  DatabaseOptions db;
  db.path = ":memory:";
  db.max_page_count = 16;
  auto repo = VmRepository::Open(db);
  ASSERT_TRUE(repo.ok()) << repo.status().ToString();
  base::Status st;
  int created = 0;
  for (int i = 0; i < 10000 && st.ok(); ++i) {
    NewVm vm = MakeVm("vm-" + std::to_string(i), "cust");
    vm.spec.metadata["pad"] = std::string(900, 'p');
    auto r = (*repo)->Create(vm);
    st = r.status();
    if (r.ok()) ++created;
  }
  EXPECT_EQ(st.code(), base::StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_GT(created, 0);
  EXPECT_EQ(*(*repo)->CountByCustomer("cust"), created);
  // Every stored VM has its log row: the failed Create left nothing half-written.
  EXPECT_EQ((*repo)->EventsSince("cust", 0, 100000)->size(), static_cast<size_t>(created));
}

}  // namespace
}  // namespace metald::store

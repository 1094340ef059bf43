#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "metald/process/proc_stat.h"
#include "metald/process/process.h"
#include "metald/process/testing/fault_spawner.h"

namespace metald::process {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

constexpr milliseconds kLong(60'000);  // Guards against hangs only.

class SpawnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/metald-spawner-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    spawner_ = NewSystemSpawner();
  }
  void TearDown() override {
    for (const ProcessId& id : started_) (void)spawner_->Kill(id, kLong);
    std::filesystem::remove_all(dir_);
  }

  ProcessId Start(SpawnSpec spec) {
    base::Result<ProcessId> id = spawner_->Spawn(spec);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    if (!id.ok()) return {};
    started_.push_back(*id);
    return *id;
  }

  // Runs `script` under /bin/sh with its output in a file; returns the output after it exits.
  std::string RunShell(const std::string& script, SpawnSpec spec = {}) {
    std::string out = dir_ + "/out" + std::to_string(++runs_);
    spec.argv = {"/bin/sh", "-c", script};
    spec.output_file = out;
    ProcessId id = Start(spec);
    base::Result<ExitInfo> exit = spawner_->WaitForExit(id, kLong);
    EXPECT_TRUE(exit.ok()) << exit.status().ToString();
    std::ifstream in(out);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::string dir_;
  std::unique_ptr<ProcessSpawner> spawner_;
  std::vector<ProcessId> started_;
  int runs_ = 0;
};

TEST_F(SpawnerTest, EnvironmentIsExactlyTheGivenOne) {
  setenv("METALD_SPAWNER_TEST_LEAK", "1", 1);
  SpawnSpec spec;
  spec.env = {"A=1", "PATH=/bin:/usr/bin"};
  std::string out = RunShell("/usr/bin/env", spec);
  EXPECT_THAT(out, HasSubstr("A=1\n"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("METALD_SPAWNER_TEST_LEAK")));
  // sh may add PWD/SHLVL; nothing from the parent may appear.
  EXPECT_THAT(out, ::testing::Not(HasSubstr("HOME=")));
}

TEST_F(SpawnerTest, ChildLeadsANewSessionInTheGivenDirectory) {
  SpawnSpec spec;
  spec.cwd = dir_;
  // Fields 5 and 6 of stat: process group and session; both equal the child's pid.
  std::string out = RunShell("echo $$; pwd; cut -d' ' -f5,6 /proc/$$/stat", spec);
  std::istringstream in(out);
  std::string pid, cwd, pgrp, sid;
  in >> pid >> cwd >> pgrp >> sid;
  EXPECT_EQ(pgrp, pid);
  EXPECT_EQ(sid, pid);
  EXPECT_EQ(cwd, dir_);
  EXPECT_NE(sid, std::to_string(::getsid(0)));
}

TEST_F(SpawnerTest, OnlyKeptDescriptorsAreInherited) {
  // Two descriptors without close-on-exec: one leaked unless closed, one passed on purpose.
  int leaked = ::open("/dev/null", O_RDONLY);
  int kept = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(leaked, 3);
  ASSERT_GE(kept, 3);
  SpawnSpec spec;
  spec.keep_fds = {kept};
  std::string out = RunShell("ls /proc/$$/fd", spec);
  std::set<std::string> fds;
  std::istringstream in(out);
  for (std::string fd; in >> fd;) fds.insert(fd);
  EXPECT_TRUE(fds.count("0") && fds.count("1") && fds.count("2")) << out;
  EXPECT_TRUE(fds.count(std::to_string(kept))) << out;
  EXPECT_FALSE(fds.count(std::to_string(leaked))) << out;
  ::close(leaked);
  ::close(kept);
}

TEST_F(SpawnerTest, ReportsExitStatusAndSignal) {
  SpawnSpec spec;
  spec.argv = {"/bin/sh", "-c", "exit 3"};
  ProcessId id = Start(spec);
  base::Result<ExitInfo> exit = spawner_->WaitForExit(id, kLong);
  ASSERT_TRUE(exit.ok()) << exit.status().ToString();
  EXPECT_TRUE(exit->known);
  EXPECT_EQ(exit->exit_code, 3);
  EXPECT_FALSE(spawner_->IsAlive(id));
  // Asking again gives the same answer (the status was kept when reaped).
  EXPECT_EQ(*spawner_->WaitForExit(id, kLong), *exit);

  spec.argv = {"/bin/sleep", "60"};
  id = Start(spec);
  EXPECT_TRUE(spawner_->IsAlive(id));
  exit = spawner_->Kill(id, kLong);
  ASSERT_TRUE(exit.ok()) << exit.status().ToString();
  EXPECT_EQ(exit->signal, SIGKILL);
  EXPECT_FALSE(spawner_->IsAlive(id));
}

TEST_F(SpawnerTest, WaitTimesOut) {
  SpawnSpec spec;
  spec.argv = {"/bin/sleep", "60"};
  ProcessId id = Start(spec);
  EXPECT_EQ(spawner_->WaitForExit(id, milliseconds(100)).status().code(),
            base::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(spawner_->IsAlive(id));
}

TEST_F(SpawnerTest, IdentityCheckRefusesADifferentStartTime) {
  SpawnSpec spec;
  spec.argv = {"/bin/sleep", "60"};
  ProcessId id = Start(spec);
  ProcessId impostor{id.pid, id.start_time + 1};
  EXPECT_FALSE(spawner_->IsAlive(impostor));
  EXPECT_EQ(spawner_->Signal(impostor, SIGKILL).code(), base::StatusCode::kNotFound);
  base::Result<ExitInfo> exit = spawner_->Kill(impostor, kLong);
  ASSERT_TRUE(exit.ok());
  EXPECT_FALSE(exit->known);
  // The real process was not touched.
  EXPECT_TRUE(spawner_->IsAlive(id));
  base::Result<ProcessId> identified = spawner_->Identify(id.pid);
  ASSERT_TRUE(identified.ok());
  EXPECT_EQ(*identified, id);
}

TEST_F(SpawnerTest, ReportsUsage) {
  SpawnSpec spec;
  spec.argv = {"/bin/sh", "-c", "while :; do :; done"};
  ProcessId id = Start(spec);
  uint64_t cpu = 0;
  for (int i = 0; i < 600 && cpu == 0; ++i) {  // Up to 60 s on a loaded machine.
    base::Result<ProcessUsage> usage = spawner_->Usage(id);
    ASSERT_TRUE(usage.ok()) << usage.status().ToString();
    EXPECT_GT(usage->rss_bytes, 0u);
    cpu = usage->cpu_time_ns;
    std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_GT(cpu, 0u);
  ASSERT_TRUE(spawner_->Kill(id, kLong).ok());
  EXPECT_EQ(spawner_->Usage(id).status().code(), base::StatusCode::kNotFound);
}

TEST_F(SpawnerTest, ExecFailuresNameTheStep) {
  SpawnSpec spec;
  spec.argv = {"relative/path"};
  EXPECT_EQ(spawner_->Spawn(spec).status().code(), base::StatusCode::kInvalidArgument);
  spec.argv = {"/nonexistent/metald-binary"};
  base::Result<ProcessId> r = spawner_->Spawn(spec);
  EXPECT_EQ(r.status().code(), base::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("/nonexistent/metald-binary"));
  spec.argv = {"/bin/true"};
  spec.cwd = dir_ + "/missing";
  r = spawner_->Spawn(spec);
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("chdir"));
  EXPECT_THAT(r.status().message(), HasSubstr("errno 2"));
  spec.cwd = "";
  spec.keep_fds = {1};
  EXPECT_EQ(spawner_->Spawn(spec).status().code(), base::StatusCode::kInvalidArgument);
}

// The child outlives the process that spawned it, even when that process's whole process group
// is killed: this is what lets a restarted metald re-adopt running VMs.
TEST_F(SpawnerTest, ChildSurvivesTheDeathOfItsSpawner) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  pid_t helper = ::fork();
  ASSERT_GE(helper, 0);
  if (helper == 0) {
    ::close(pipe_fds[0]);
    ::setpgid(0, 0);
    std::unique_ptr<ProcessSpawner> spawner = NewSystemSpawner();
    SpawnSpec spec;
    spec.argv = {"/bin/sleep", "60"};
    base::Result<ProcessId> id = spawner->Spawn(spec);
    ProcessId out = id.ok() ? *id : ProcessId{};
    ssize_t n = ::write(pipe_fds[1], &out, sizeof out);
    (void)n;
    ::kill(0, SIGKILL);  // The helper's own process group.
    ::_exit(1);
  }
  ::close(pipe_fds[1]);
  ProcessId id;
  ASSERT_EQ(::read(pipe_fds[0], &id, sizeof id), static_cast<ssize_t>(sizeof id));
  ::close(pipe_fds[0]);
  int status;
  ASSERT_EQ(::waitpid(helper, &status, 0), helper);
  ASSERT_TRUE(WIFSIGNALED(status));
  ASSERT_GT(id.pid, 0);
  started_.push_back(id);

  EXPECT_TRUE(spawner_->IsAlive(id));
  base::Result<ProcStat> stat = ReadProcStat(id.pid);
  ASSERT_TRUE(stat.ok());
  // Not our child: Kill still works through the pidfd; the exit status went to its new parent.
  base::Result<ExitInfo> exit = spawner_->Kill(id, kLong);
  ASSERT_TRUE(exit.ok()) << exit.status().ToString();
  EXPECT_FALSE(exit->known);
  EXPECT_FALSE(spawner_->IsAlive(id));
}

TEST(FaultSpawnerTest, FailsSpawnOnDemand) {
  std::unique_ptr<ProcessSpawner> real = NewSystemSpawner();
  testing::FaultSpawner spawner(real.get());
  spawner.spawn_error = base::ResourceExhaustedError("fork: injected");
  SpawnSpec spec;
  spec.argv = {"/bin/true"};
  EXPECT_EQ(spawner.Spawn(spec).status().code(), base::StatusCode::kResourceExhausted);
  EXPECT_EQ(spawner.spawn_calls, 1);
}

}  // namespace
}  // namespace metald::process

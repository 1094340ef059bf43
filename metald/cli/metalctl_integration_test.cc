// Runs the real metalctl binary against the real metald binary (127.0.0.1:0, dev tokens): list on
// an empty daemon, get of an unknown id, a call without a token, an unreachable server, usage
// errors. Exit codes: 0 ok, 1 server error, 2 usage, 3 unreachable.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "metald/daemon/testing/daemon_process.h"

namespace metald::cli {
namespace {

using daemon::testing::MetaldProcess;
using daemon::testing::RunCommand;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kMetald[] = METALD_BINARY;
constexpr char kMetalctl[] = METALCTL_BINARY;

// Runs metalctl with `args` after the program name.
daemon::testing::CommandResult Metalctl(std::vector<std::string> args,
                                        std::vector<std::string> env = {}) {
  args.insert(args.begin(), kMetalctl);
  return RunCommand(args, env);
}

TEST(MetalctlTest, UsageErrorsExitWith2) {
  auto r = Metalctl({});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = Metalctl({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = Metalctl({"get"});  // Missing ID.
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = Metalctl({"--output", "yaml", "list"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = Metalctl({"list", "--state", "sleeping"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("Unknown state 'sleeping'"));
  r = Metalctl({"create", "--memory", "lots"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("Bad memory size 'lots'"));
  r = Metalctl({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("create"));
  EXPECT_THAT(r.out, HasSubstr("watch"));
}

TEST(MetalctlTest, UnreachableServerExitsWith3) {
  // Port 1 on loopback: nothing listens there (connection refused).
  auto r = Metalctl({"--server", "http://127.0.0.1:1", "--token", "dev_customer_a", "list"});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_THAT(r.err, StartsWith("metalctl: cannot reach http://127.0.0.1:1: "));

  r = Metalctl({"list"}, {"METALD_SERVER=unix:/nonexistent/metald.sock"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
}

class MetalctlDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(kMetald).empty()) GTEST_SKIP() << "metald is not built in this tree yet";
    metald_ = std::make_unique<MetaldProcess>(kMetald);
    addr_ = metald_->WaitReady();
    ASSERT_FALSE(addr_.empty()) << metald_->Stderr();
    server_ = "http://" + addr_;
  }

  std::unique_ptr<MetaldProcess> metald_;
  std::string addr_;
  std::string server_;
};

TEST_F(MetalctlDaemonTest, ListOnEmptyDaemon) {
  auto r = Metalctl({"--server", server_, "--token", "dev_customer_acme", "list"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "ID  STATE  VCPUS  MEMORY  IPV4  CREATED\n");

  // The same through the environment, as JSON (proto3 JSON of an empty ListVmsResponse).
  r = Metalctl({"-o", "json", "list", "--all", "--state", "running", "--page-size", "10"},
               {"METALD_SERVER=" + server_, "METALD_TOKEN=dev_customer_acme"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "{}\n");

  // Global flags may also follow the subcommand.
  r = Metalctl({"list", "-o", "json", "--server", server_, "--token", "dev_customer_acme"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "{}\n");
}

TEST_F(MetalctlDaemonTest, GetUnknownIdIsNotFound) {
  auto r = Metalctl({"--server", server_, "--token", "dev_customer_acme", "get", "vm-nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, StartsWith("metalctl: not_found: "));
  EXPECT_EQ(r.out, "");

  r = Metalctl({"--server", server_, "--token", "dev_customer_acme", "delete", "vm-nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, StartsWith("metalctl: not_found: "));
}

TEST_F(MetalctlDaemonTest, NoTokenIsUnauthenticated) {
  auto r = Metalctl({"--server", server_, "list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, StartsWith("metalctl: unauthenticated: "));
}

TEST_F(MetalctlDaemonTest, CreateWithPathOutsideImageRootsIsInvalidArgument) {
  auto r = Metalctl({"--server", server_, "--token", "dev_customer_acme", "create", "--kernel",
                     "/etc/passwd", "--memory", "128M"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.err, StartsWith("metalctl: invalid_argument: "));
  EXPECT_THAT(r.err, HasSubstr("kernel"));
}

}  // namespace
}  // namespace metald::cli

// Runs the real metald binary on 127.0.0.1:0 (dev tokens, temporary data dir and image root) and
// checks what an operator and a client see: health, readiness, metrics, an authenticated and an
// unauthenticated ListVms, a clean SIGTERM, and the exit code 2 of a bad configuration. VM
// lifecycles with real QEMU are tests/system's job.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "metald/daemon/testing/daemon_process.h"
#include "metald/rpc/client.h"
#include "metald/v1/vm.metald.h"

namespace metald::daemon {
namespace {

using ::testing::HasSubstr;
using testing::HttpGet;
using testing::MetaldProcess;
using testing::RunCommand;

constexpr char kMetald[] = METALD_BINARY;

class DaemonIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(kMetald).empty()) GTEST_SKIP() << "metald is not built in this tree yet";
  }
};

// ListVms through the generated client; `token` empty = no authorization header.
base::Result<v1::ListVmsResponse> ListVms(const std::string& address, const std::string& token) {
  rpc::ClientOptions options;
  options.target = address;
  if (!token.empty()) options.headers.Add("authorization", "Bearer " + token);
  auto client = rpc::Client::Create(options);
  if (!client.ok()) return client.status();
  v1::VmServiceClient stub(client->get());
  rpc::CallOptions call;
  call.timeout = std::chrono::seconds(30);
  return stub.ListVms(v1::ListVmsRequest(), call);
}

TEST_F(DaemonIntegrationTest, ServesHealthMetricsAndApiThenStopsOnSigterm) {
  MetaldProcess metald(kMetald);
  std::string addr = metald.WaitReady();
  ASSERT_FALSE(addr.empty()) << metald.Stderr();
  EXPECT_THAT(addr, ::testing::StartsWith("127.0.0.1:"));
  EXPECT_NE(addr, "127.0.0.1:0");

  testing::HttpResult healthz = HttpGet(addr, "/healthz");
  EXPECT_EQ(healthz.status, 200) << healthz.body;

  // Ready once start-up recovery is done and the backend is healthy; without a usable QEMU the
  // daemon still serves and says why it is not ready.
  testing::HttpResult readyz;
  for (int i = 0; i < 600; ++i) {
    readyz = HttpGet(addr, "/readyz");
    if (readyz.status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(readyz.status == 200 || readyz.status == 503) << readyz.status;
  if (readyz.status == 503) {
    EXPECT_THAT(readyz.body, HasSubstr("not ready"));
  }

  auto listed = ListVms(addr, "dev_customer_acme");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_EQ(listed->vms_size(), 0);
  EXPECT_EQ(listed->next_page_token(), "");

  auto anonymous = ListVms(addr, "");
  ASSERT_FALSE(anonymous.ok());
  EXPECT_EQ(anonymous.status().code(), base::StatusCode::kUnauthenticated);

  auto bad_token = ListVms(addr, "not-a-token");
  ASSERT_FALSE(bad_token.ok());
  EXPECT_EQ(bad_token.status().code(), base::StatusCode::kUnauthenticated);

  // The metrics count the calls above, and the process metrics are there.
  testing::HttpResult metrics = HttpGet(addr, "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.body, HasSubstr("metald_rpc_requests_total"));
  EXPECT_THAT(metrics.body, HasSubstr("list_vms"));
  EXPECT_THAT(metrics.body, HasSubstr("unauthenticated"));
  EXPECT_THAT(metrics.body, HasSubstr("process_resident_memory_bytes"));

  EXPECT_EQ(metald.Terminate(), 0) << metald.Stderr();
  std::string log = metald.Stderr();
  EXPECT_THAT(log, HasSubstr("metald ready"));
  EXPECT_THAT(log, HasSubstr(addr));
  EXPECT_THAT(log, HasSubstr("metald stopped"));

  // The store survived: a second daemon on the same data dir starts cleanly.
}

TEST_F(DaemonIntegrationTest, BadConfigurationExitsWithCode2AndOneLine) {
  auto r = RunCommand({kMetald, "--dev-tokens", "--image-root", "/nope"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "metald: --image-root /nope: not a directory\n");

  testing::TempDir dir;
  r = RunCommand({kMetald, "--image-root", dir.path(), "--data-dir", dir.path()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err,
            "metald: no authentication configured: pass --dev-tokens or --jwt-key/--jwks-file\n");

  r = RunCommand({kMetald, "--dev-tokens", "--image-root", dir.path(), "--jwt-key", "HS512:/k"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "metald: --jwt-key: unknown algorithm 'HS512' (want HS256, RS256 or ES256)\n");

  r = RunCommand({kMetald, "--no-such-flag"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--no-such-flag"));

  // Nothing was created for a bad configuration.
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/metald.db"));

  r = RunCommand({kMetald, "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--image-root"));
}

TEST_F(DaemonIntegrationTest, EnvironmentConfiguresTheDaemon) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.path() + "/images");
  // METALD_AUTH_DEV_TOKENS=true alone is enough authentication; the image root defaults to
  // <data-dir>/images.
  auto r = RunCommand({kMetald, "--listen", "127.0.0.1:0", "--handler-threads", "0"},
                      {"METALD_AUTH_DEV_TOKENS=true", "METALD_DATA_DIR=" + dir.path()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "metald: --handler-threads 0: must be between 1 and 1024\n");
}

TEST_F(DaemonIntegrationTest, StartupErrorsExitWithCode1) {
  // A key file that cannot be read.
  MetaldProcess missing_key(kMetald, {"--jwt-key", "HS256:/nonexistent/key"});
  EXPECT_EQ(missing_key.WaitReady(std::chrono::seconds(60)), "");
  EXPECT_EQ(missing_key.Terminate(), 1);
  EXPECT_THAT(missing_key.Stderr(), HasSubstr("metald: --jwt-key: Cannot read /nonexistent/key"));

  // The port is taken by a first daemon.
  MetaldProcess first(kMetald);
  std::string addr = first.WaitReady();
  ASSERT_FALSE(addr.empty()) << first.Stderr();
  testing::TempDir dir;
  std::filesystem::create_directories(dir.path() + "/images");
  auto r = RunCommand({kMetald, "--dev-tokens", "--listen", addr, "--data-dir",
                       dir.path() + "/data", "--image-root", dir.path() + "/images"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("metald: listen " + addr + ": "));
}

}  // namespace
}  // namespace metald::daemon

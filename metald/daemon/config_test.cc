#include "metald/daemon/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace metald::daemon {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/metald_config_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    images_ = dir_ + "/images";
    fs::create_directories(images_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Parses `flags` after the program name with `env_` as the environment.
  ParseOutcome Parse(std::vector<std::string> flags) {
    flags.insert(flags.begin(), "metald");
    return ParseConfig(flags, [this](std::string_view name) -> std::optional<std::string> {
      auto it = env_.find(std::string(name));
      if (it == env_.end()) return std::nullopt;
      return it->second;
    });
  }
  // The minimal valid command line plus `extra`.
  ParseOutcome ParseValid(std::vector<std::string> extra = {}) {
    std::vector<std::string> flags = {"--dev-tokens", "--data-dir", dir_, "--image-root", images_};
    flags.insert(flags.end(), extra.begin(), extra.end());
    return Parse(flags);
  }
  void ExpectError(const ParseOutcome& o, const std::string& message) {
    EXPECT_FALSE(o.run);
    EXPECT_EQ(o.exit_code, 2);
    EXPECT_EQ(o.output, "metald: " + message);
  }

  std::string dir_;
  std::string images_;
  std::map<std::string, std::string> env_;
};

TEST_F(ConfigTest, Defaults) {
  ParseOutcome o = ParseValid();
  ASSERT_TRUE(o.run) << o.output;
  const Config& c = o.config;
  EXPECT_THAT(c.listen, ElementsAre("127.0.0.1:8080"));
  EXPECT_EQ(c.data_dir, dir_);
  EXPECT_EQ(c.db_path(), dir_ + "/metald.db");
  EXPECT_EQ(c.lease_db_path(), dir_ + "/leases.db");
  EXPECT_EQ(c.vm_root(), dir_ + "/vms");
  EXPECT_EQ(c.backend, "qemu");
  EXPECT_TRUE(c.dev_tokens);
  EXPECT_TRUE(c.jwt_keys.empty());
  EXPECT_FALSE(c.jwt_issuer.has_value());
  EXPECT_EQ(c.jwt_customer_claim, "customer_id");
  EXPECT_THAT(c.image_roots, ElementsAre(images_));
  EXPECT_EQ(c.accel, "auto");
  EXPECT_FALSE(c.network);
  EXPECT_EQ(c.network_cidr, "10.213.0.0/16");
  EXPECT_EQ(c.network_prefix, "mtld");
  EXPECT_EQ(c.max_vms_per_customer, 0);
  EXPECT_EQ(c.handler_threads, 64);
  EXPECT_EQ(c.log_format, "json");
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.ready_file, "");
}

TEST_F(ConfigTest, DefaultDataDirIsVarLibMetald) {
  ParseOutcome o = Parse({"--dev-tokens", "--image-root", images_});
  ASSERT_TRUE(o.run) << o.output;
  EXPECT_EQ(o.config.data_dir, "/var/lib/metald");
}

TEST_F(ConfigTest, EveryFlag) {
  std::string key = dir_ + "/k.pem";
  ParseOutcome o = ParseValid({"--listen",
                               "127.0.0.1:0",
                               "--listen",
                               "[::1]:9000",
                               "--socket",
                               dir_ + "/m.sock",
                               "--backend",
                               "QEMU",
                               "--jwt-key",
                               "RS256:" + key,
                               "--jwt-key",
                               "ES256:kid-1:" + key,
                               "--jwks-file",
                               "/j.json",
                               "--jwt-issuer",
                               "iss",
                               "--jwt-audience",
                               "aud",
                               "--jwt-customer-claim",
                               "tenant",
                               "--qemu-binary",
                               "/usr/bin/qemu",
                               "--accel",
                               "tcg",
                               "--kvm-probe-kernel",
                               "/k",
                               "--kvm-probe-initrd",
                               "/i",
                               "--network",
                               "--network-cidr",
                               "10.0.0.0/24",
                               "--network-prefix",
                               "t1",
                               "--nat-uplink",
                               "eth0",
                               "--max-vms-per-customer",
                               "5",
                               "--handler-threads",
                               "8",
                               "--tls-cert",
                               "/c",
                               "--tls-key",
                               "/k",
                               "--tls-client-ca",
                               "/ca",
                               "--log-format",
                               "text",
                               "--log-level",
                               "debug",
                               "--ready-file",
                               dir_ + "/ready"});
  ASSERT_TRUE(o.run) << o.output;
  const Config& c = o.config;
  EXPECT_THAT(c.listen, ElementsAre("127.0.0.1:0", "[::1]:9000", "unix:" + dir_ + "/m.sock"));
  EXPECT_EQ(c.backend, "qemu");
  EXPECT_THAT(c.jwt_keys,
              ElementsAre(JwtKeyFlag{"RS256", "", key}, JwtKeyFlag{"ES256", "kid-1", key}));
  EXPECT_EQ(c.jwks_file, "/j.json");
  EXPECT_EQ(c.jwt_issuer, "iss");
  EXPECT_EQ(c.jwt_audience, "aud");
  EXPECT_EQ(c.jwt_customer_claim, "tenant");
  EXPECT_EQ(c.qemu_binary, "/usr/bin/qemu");
  EXPECT_EQ(c.accel, "tcg");
  EXPECT_EQ(c.kvm_probe_kernel, "/k");
  EXPECT_EQ(c.kvm_probe_initrd, "/i");
  EXPECT_TRUE(c.network);
  EXPECT_EQ(c.network_cidr, "10.0.0.0/24");
  EXPECT_EQ(c.network_prefix, "t1");
  EXPECT_EQ(c.nat_uplink, "eth0");
  EXPECT_EQ(c.max_vms_per_customer, 5);
  EXPECT_EQ(c.handler_threads, 8);
  EXPECT_EQ(c.tls_cert, "/c");
  EXPECT_EQ(c.tls_key, "/k");
  EXPECT_EQ(c.tls_client_ca, "/ca");
  EXPECT_EQ(c.log_format, "text");
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.ready_file, dir_ + "/ready");
}

TEST_F(ConfigTest, ListenNoneWithSocket) {
  ParseOutcome o = ParseValid({"--listen", "none", "--socket", dir_ + "/s"});
  ASSERT_TRUE(o.run) << o.output;
  EXPECT_THAT(o.config.listen, ElementsAre("unix:" + dir_ + "/s"));
}

TEST_F(ConfigTest, EnvironmentFillsUnsetFlags) {
  env_["METALD_LISTEN"] = "127.0.0.1:1,127.0.0.1:2";
  env_["METALD_DATA_DIR"] = dir_;
  env_["METALD_IMAGE_ROOT"] = images_;
  env_["METALD_DEV_TOKENS"] = "true";
  env_["METALD_HANDLER_THREADS"] = "3";
  env_["METALD_NETWORK"] = "1";
  env_["METALD_JWT_ISSUER"] = "https://issuer";
  env_["METALD_LOG_LEVEL"] = "warn";
  ParseOutcome o = Parse({});
  ASSERT_TRUE(o.run) << o.output;
  EXPECT_THAT(o.config.listen, ElementsAre("127.0.0.1:1", "127.0.0.1:2"));
  EXPECT_EQ(o.config.data_dir, dir_);
  EXPECT_THAT(o.config.image_roots, ElementsAre(images_));
  EXPECT_TRUE(o.config.dev_tokens);
  EXPECT_EQ(o.config.handler_threads, 3);
  EXPECT_TRUE(o.config.network);
  EXPECT_EQ(o.config.jwt_issuer, "https://issuer");
  EXPECT_EQ(o.config.log_level, "warn");
}

TEST_F(ConfigTest, FlagWinsOverEnvironment) {
  env_["METALD_LISTEN"] = "127.0.0.1:1";
  env_["METALD_HANDLER_THREADS"] = "3";
  env_["METALD_LOG_FORMAT"] = "text";
  env_["METALD_DEV_TOKENS"] = "true";
  ParseOutcome o =
      ParseValid({"--listen", "127.0.0.1:7", "--handler-threads", "9", "--log-format", "json"});
  ASSERT_TRUE(o.run) << o.output;
  EXPECT_THAT(o.config.listen, ElementsAre("127.0.0.1:7"));
  EXPECT_EQ(o.config.handler_threads, 9);
  EXPECT_EQ(o.config.log_format, "json");
}

TEST_F(ConfigTest, DevTokensFromAuthEnvironmentVariable) {
  env_["METALD_AUTH_DEV_TOKENS"] = "true";
  ParseOutcome o = Parse({"--data-dir", dir_, "--image-root", images_});
  ASSERT_TRUE(o.run) << o.output;
  EXPECT_TRUE(o.config.dev_tokens);

  env_["METALD_AUTH_DEV_TOKENS"] = "false";
  ExpectError(Parse({"--data-dir", dir_, "--image-root", images_}),
              "no authentication configured: pass --dev-tokens or --jwt-key/--jwks-file");

  // An explicit --dev-tokens=false on the command line wins over the environment.
  env_["METALD_AUTH_DEV_TOKENS"] = "true";
  ExpectError(Parse({"--dev-tokens=false", "--data-dir", dir_, "--image-root", images_}),
              "no authentication configured: pass --dev-tokens or --jwt-key/--jwks-file");
}

TEST_F(ConfigTest, DefaultImageRootUnderDataDir) {
  ParseOutcome o = Parse({"--dev-tokens", "--data-dir", dir_});
  ASSERT_TRUE(o.run) << o.output;
  EXPECT_THAT(o.config.image_roots, ElementsAre(dir_ + "/images"));

  fs::remove_all(images_);
  ExpectError(Parse({"--dev-tokens", "--data-dir", dir_}),
              "--image-root: required (the default " + dir_ + "/images does not exist)");
}

TEST_F(ConfigTest, JailFlags) {
  ParseOutcome o = ParseValid();
  ASSERT_TRUE(o.run) << o.output;
  EXPECT_FALSE(o.config.jail);
  EXPECT_EQ(o.config.jail_dir(), dir_ + "/jail");
  EXPECT_EQ(o.config.uid_first, 900000u);
  EXPECT_EQ(o.config.uid_last, 965535u);

  fs::create_directories(images_ + "/rw");
  o = ParseValid({"--jail", "--jail-base", dir_ + "/j", "--uid-range", "5000-5099", "--cgroup-root",
                  "mtest", "--cpu-ratio", "0.5", "--jail-memory-overhead-mib", "32",
                  "--writable-disk-dir", images_ + "/rw"});
  ASSERT_TRUE(o.run) << o.output;
  EXPECT_TRUE(o.config.jail);
  EXPECT_EQ(o.config.jail_dir(), dir_ + "/j");
  EXPECT_EQ(o.config.uid_first, 5000u);
  EXPECT_EQ(o.config.uid_last, 5099u);
  EXPECT_EQ(o.config.cgroup_root, "mtest");
  EXPECT_DOUBLE_EQ(o.config.cpu_ratio, 0.5);
  EXPECT_EQ(o.config.jail_memory_overhead_mib, 32u);
  EXPECT_EQ(o.config.writable_disk_dir, images_ + "/rw");

  env_["METALD_JAIL"] = "true";
  o = ParseValid();
  ASSERT_TRUE(o.run) << o.output;
  EXPECT_TRUE(o.config.jail);
  env_.clear();

  ExpectError(ParseValid({"--uid-range", "0-10"}),
              "--uid-range 0-10: want FIRST-LAST with 0 < FIRST <= LAST");
  ExpectError(ParseValid({"--uid-range", "20-10"}),
              "--uid-range 20-10: want FIRST-LAST with 0 < FIRST <= LAST");
  ExpectError(ParseValid({"--uid-range", "abc"}),
              "--uid-range abc: want FIRST-LAST with 0 < FIRST <= LAST");
  ExpectError(ParseValid({"--jail", "--jail-base", "relative"}),
              "--jail-base relative: must be an absolute path");
  ExpectError(ParseValid({"--writable-disk-dir", images_}), "--writable-disk-dir: needs --jail");
  ExpectError(ParseValid({"--customer-cpus-max", "2"}),
              "--customer-memory-max-mib/--customer-cpus-max: need --jail (cgroups)");
  ExpectError(ParseValid({"--jail", "--customer-cpus-max", "-1"}),
              "--customer-cpus-max -1.000000: must be between 0 (no cap) and 4096");
  o = ParseValid({"--jail", "--customer-memory-max-mib", "4096", "--customer-cpus-max", "2.5"});
  ASSERT_TRUE(o.run) << o.output;
  EXPECT_EQ(o.config.customer_memory_max_mib, 4096u);
  EXPECT_DOUBLE_EQ(o.config.customer_cpus_max, 2.5);
  ExpectError(ParseValid({"--jail", "--writable-disk-dir", dir_ + "/nope"}),
              "--writable-disk-dir " + dir_ + "/nope: not an absolute, existing directory");
}

TEST_F(ConfigTest, Help) {
  ParseOutcome o = Parse({"--help"});
  EXPECT_FALSE(o.run);
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_THAT(o.output, HasSubstr("--image-root"));
  EXPECT_THAT(o.output, HasSubstr("METALD_SOME_FLAG"));
}

TEST_F(ConfigTest, Errors) {
  ExpectError(ParseValid({"--image-root", "/nope"}), "--image-root /nope: not a directory");
  ExpectError(ParseValid({"--image-root", "rel"}), "--image-root rel: must be an absolute path");
  ExpectError(ParseValid({"--jwt-key", "HS512:/k"}),
              "--jwt-key: unknown algorithm 'HS512' (want HS256, RS256 or ES256)");
  ExpectError(ParseValid({"--jwt-key", "HS256"}), "--jwt-key HS256: want ALG:PATH or ALG:KID:PATH");
  ExpectError(Parse({"--data-dir", dir_, "--image-root", images_}),
              "no authentication configured: pass --dev-tokens or --jwt-key/--jwks-file");
  ExpectError(ParseValid({"--backend", "firecracker"}),
              "--backend firecracker: not available in this build (only qemu is)");
  ExpectError(ParseValid({"--backend", "cloud-hypervisor"}),
              "--backend cloud-hypervisor: not available in this build (only qemu is)");
  ExpectError(ParseValid({"--backend", "xen"}),
              "--backend xen: unknown backend (want qemu, firecracker or cloud-hypervisor)");
  ExpectError(ParseValid({"--listen", "localhost"}),
              "--listen localhost: want HOST:PORT (e.g. 127.0.0.1:8080), [V6]:PORT, unix:PATH or "
              "none");
  ExpectError(ParseValid({"--listen", "1.2.3.4:99999"}),
              "--listen 1.2.3.4:99999: want HOST:PORT (e.g. 127.0.0.1:8080), [V6]:PORT, "
              "unix:PATH or none");
  ExpectError(ParseValid({"--listen", "none"}),
              "--listen none: nothing to listen on (pass --socket PATH)");
  ExpectError(ParseValid({"--listen", "none", "--listen", "127.0.0.1:1"}),
              "--listen none: cannot be combined with other --listen addresses");
  std::string long_path = "/" + std::string(120, 'x');
  ExpectError(ParseValid({"--socket", long_path}),
              "--socket " + long_path + ": unix socket path longer than 107 bytes");
  ExpectError(Parse({"--dev-tokens", "--data-dir", "var/lib", "--image-root", images_}),
              "--data-dir var/lib: must be an absolute path");
  ExpectError(ParseValid({"--accel", "hvf"}), "--accel hvf: want auto, kvm or tcg");
  ExpectError(ParseValid({"--kvm-probe-initrd", "/i"}),
              "--kvm-probe-initrd: needs --kvm-probe-kernel");
  EXPECT_THAT(ParseValid({"--network-cidr", "10.0.0.0/31"}).output,
              HasSubstr("metald: --network-cidr 10.0.0.0/31: "));
  EXPECT_THAT(ParseValid({"--network-cidr", "banana"}).output,
              HasSubstr("metald: --network-cidr banana: "));
  ExpectError(ParseValid({"--network-prefix", "toolong"}),
              "--network-prefix toolong: want 1 to 4 characters of [a-z0-9], starting with a "
              "letter");
  ExpectError(ParseValid({"--max-vms-per-customer", "-1"}),
              "--max-vms-per-customer -1: must be 0 (unlimited) or more");
  ExpectError(ParseValid({"--handler-threads", "0"}),
              "--handler-threads 0: must be between 1 and 1024");
  ExpectError(ParseValid({"--tls-cert", "/c"}), "--tls-cert: needs --tls-key");
  ExpectError(ParseValid({"--tls-key", "/k"}), "--tls-key: needs --tls-cert");
  ExpectError(ParseValid({"--tls-client-ca", "/ca"}),
              "--tls-client-ca: needs --tls-cert and --tls-key");
  ExpectError(ParseValid({"--log-format", "xml"}), "--log-format xml: want json or text");
  ExpectError(ParseValid({"--log-level", "loud"}),
              "--log-level loud: want debug, info, warn or error");
  ExpectError(ParseValid({"--jwt-customer-claim", ""}), "--jwt-customer-claim: must not be empty");
}

TEST_F(ConfigTest, CommandLineSyntaxErrorsAreUsageErrors) {
  ParseOutcome o = ParseValid({"--no-such-flag"});
  EXPECT_FALSE(o.run);
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_THAT(o.output, HasSubstr("--no-such-flag"));

  o = ParseValid({"--handler-threads", "many"});
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_THAT(o.output, HasSubstr("--handler-threads"));
}

TEST_F(ConfigTest, EnvironmentErrorsNameTheVariable) {
  env_["METALD_HANDLER_THREADS"] = "lots";
  ParseOutcome o = ParseValid();
  EXPECT_FALSE(o.run);
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_THAT(o.output, HasSubstr("METALD_HANDLER_THREADS=lots"));

  env_.clear();
  env_["METALD_IMAGE_ROOT"] = "/nope";
  ExpectError(Parse({"--dev-tokens", "--data-dir", dir_}), "--image-root /nope: not a directory");
}

TEST_F(ConfigTest, JwtKeyWithColonsInPath) {
  ParseOutcome o = ParseValid({"--jwt-key", "HS256:/a:b"});
  ASSERT_TRUE(o.run) << o.output;
  EXPECT_THAT(o.config.jwt_keys, ElementsAre(JwtKeyFlag{"HS256", "", "/a:b"}));
}

}  // namespace
}  // namespace metald::daemon

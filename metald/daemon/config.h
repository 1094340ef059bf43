#pragma once
// metald's configuration: command-line flags (CLI11) and METALD_* environment variables, parsed
// and validated in one place before anything is created (style.md rule 11).
//
// Every flag `--some-flag` may also come from the environment variable METALD_SOME_FLAG; a flag
// given on the command line wins over the environment. Repeatable flags (--listen, --jwt-key,
// --image-root) take a comma-separated list from the environment. METALD_AUTH_DEV_TOKENS=true
// enables --dev-tokens as well.
//
// Parsing does not create, open or modify anything: it only reads the environment through the
// injected lookup and stats paths it must validate (image roots). Thread-safety: pure functions.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace metald::daemon {

// One --jwt-key ALG:PATH or ALG:KID:PATH. The file is read at startup, not while parsing.
struct JwtKeyFlag {
  std::string algorithm;  // "HS256", "RS256" or "ES256" (validated).
  std::string kid;        // Empty when not given.
  std::string path;       // HS256: the secret bytes; RS256 / ES256: a PEM public key.
  friend bool operator==(const JwtKeyFlag&, const JwtKeyFlag&) = default;
};

struct Config {
  // Server addresses ("127.0.0.1:8080", "[::1]:0", "unix:/path"), TCP listeners first, then the
  // unix socket. Never empty after a successful parse.
  std::vector<std::string> listen;
  // Holds metald.db, leases.db and vms/. Absolute. Default: /var/lib/metald.
  std::string data_dir = "/var/lib/metald";
  // "qemu" (the only backend this build has).
  std::string backend = "qemu";

  // Authentication. At least one of dev_tokens, jwt_keys, jwks_file.
  bool dev_tokens = false;
  std::vector<JwtKeyFlag> jwt_keys;
  std::string jwks_file;
  std::optional<std::string> jwt_issuer;
  std::optional<std::string> jwt_audience;
  std::string jwt_customer_claim = "customer_id";

  // Directories kernel, initrd and disk paths must resolve into; absolute, existing.
  std::vector<std::string> image_roots;

  // QEMU backend.
  std::string qemu_binary;     // Empty: qemu-system-x86_64 from PATH.
  std::string accel = "auto";  // "auto", "kvm" or "tcg".
  std::string kvm_probe_kernel;
  std::string kvm_probe_initrd;

  // Per-VM networking (net/); needs root.
  bool network = false;
  std::string network_cidr = "10.213.0.0/16";
  std::string network_prefix = "mtld";
  std::string nat_uplink;

  // The jailer (docs/jail.md): every VMM in its own chroot, uid/gid, cgroups, no capabilities.
  // Needs root.
  bool jail = false;
  std::string jail_base;  // Where the jails are; empty: <data-dir>/jail.
  // Fresh per-VM uids (gid = uid) come from this range.
  uint32_t uid_first = 900000;
  uint32_t uid_last = 965535;
  std::string cgroup_root = "metald";      // Name of metald's cgroup under each hierarchy.
  double cpu_ratio = 1.0;                  // CPU max = vCPUs x ratio.
  uint64_t jail_memory_overhead_mib = 64;  // cgroup memory = guest memory + this.
  // Caps on all VMs of one customer together (its cgroup); 0 = no cap.
  uint64_t customer_memory_max_mib = 0;
  double customer_cpus_max = 0;
  // The only place writable disks of jailed VMs may be (chowned to the VM's uid while it
  // exists); empty: jailed VMs get read-only disks only. Absolute, under an image root.
  std::string writable_disk_dir;

  int max_vms_per_customer = 0;  // 0 = unlimited.
  int handler_threads = 64;

  // TLS for TCP listeners; cert and key together; client CA turns on mTLS.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;

  std::string log_format = "json";  // "json" or "text".
  std::string log_level = "info";   // "debug", "info", "warn", "error".

  // After the server listens, the bound addresses are written here (one per line, atomically).
  std::string ready_file;

  // Derived paths.
  std::string db_path() const { return data_dir + "/metald.db"; }
  std::string lease_db_path() const { return data_dir + "/leases.db"; }
  std::string vm_root() const { return data_dir + "/vms"; }
  std::string jail_dir() const { return jail_base.empty() ? data_dir + "/jail" : jail_base; }
};

// Reads one environment variable; nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;
// The process environment (std::getenv).
EnvLookup ProcessEnv();

// What ParseConfig decided.
struct ParseOutcome {
  // True: run the daemon with `config`. False: exit at once with `exit_code`, after printing
  // `output` (help text on stdout for code 0; one error line on stderr otherwise).
  bool run = false;
  int exit_code = 0;
  std::string output;
  Config config;
};

// Parses `args` (args[0] is the program name) and the environment, and validates the result.
// Errors (exit code 2) are one line naming the flag and the problem, e.g.
// "--image-root /nope: not a directory". --help gives exit code 0 with the usage text.
ParseOutcome ParseConfig(const std::vector<std::string>& args, const EnvLookup& env);

}  // namespace metald::daemon

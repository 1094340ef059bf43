#include "metald/daemon/config.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "metald/auth/authenticator.h"
#include "metald/model/backend_kind.h"
#include "metald/net/address.h"
#include "metald/observe/log.h"

namespace metald::daemon {
namespace {

namespace fs = std::filesystem;

// A validation failure: the one line printed on stderr.
struct ConfigError {
  std::string message;
};

// "listen" -> "METALD_LISTEN", "data-dir" -> "METALD_DATA_DIR".
std::string EnvName(std::string_view flag) {
  std::string name = "METALD_";
  for (char c : flag) {
    name += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return name;
}

bool IsTrue(std::string_view v) {
  std::string s(v);
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s == "1" || s == "true" || s == "yes" || s == "on";
}

// "host:port" with a numeric port, or "[v6]:port".
bool IsHostPort(std::string_view addr) {
  size_t colon = addr.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::string_view host = addr.substr(0, colon);
  std::string_view port = addr.substr(colon + 1);
  if (port.empty() || port.size() > 5) return false;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
  }
  if (std::stoul(std::string(port)) > 65535) return false;
  if (host.front() == '[') return host.size() > 2 && host.back() == ']';
  return host.find(':') == std::string_view::npos;
}

// Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
constexpr size_t kMaxUnixPath = 107;

std::optional<ConfigError> CheckUnixPath(const std::string& flag, const std::string& path) {
  if (path.empty()) return ConfigError{flag + ": empty unix socket path"};
  if (path.size() > kMaxUnixPath) {
    return ConfigError{flag + " " + path + ": unix socket path longer than " +
                       std::to_string(kMaxUnixPath) + " bytes"};
  }
  return std::nullopt;
}

std::optional<ConfigError> ParseJwtKey(const std::string& value, JwtKeyFlag* out) {
  size_t first = value.find(':');
  if (first == std::string::npos || first == 0 || first + 1 == value.size()) {
    return ConfigError{"--jwt-key " + value + ": want ALG:PATH or ALG:KID:PATH"};
  }
  out->algorithm = value.substr(0, first);
  if (!auth::JwtAlgorithmFromName(out->algorithm)) {
    return ConfigError{"--jwt-key: unknown algorithm '" + out->algorithm +
                       "' (want HS256, RS256 or ES256)"};
  }
  std::string rest = value.substr(first + 1);
  // ALG:KID:PATH when the part after ALG is not itself a path and another ':' follows.
  size_t second = rest.find(':');
  if (second != std::string::npos && rest.front() != '/') {
    out->kid = rest.substr(0, second);
    out->path = rest.substr(second + 1);
    if (out->kid.empty() || out->path.empty()) {
      return ConfigError{"--jwt-key " + value + ": want ALG:PATH or ALG:KID:PATH"};
    }
  } else {
    out->path = rest;
  }
  return std::nullopt;
}

std::optional<ConfigError> Validate(Config& c, const std::vector<std::string>& tcp_listen,
                                    const std::string& socket, bool listen_given) {
  // Listeners.
  std::vector<std::string> tcp =
      listen_given ? tcp_listen : std::vector<std::string>{"127.0.0.1:8080"};
  bool none = std::find(tcp.begin(), tcp.end(), "none") != tcp.end();
  if (none && tcp.size() > 1) {
    return ConfigError{"--listen none: cannot be combined with other --listen addresses"};
  }
  c.listen.clear();
  if (!none) {
    for (const std::string& a : tcp) {
      if (a.starts_with("unix:")) {
        if (auto e = CheckUnixPath("--listen", a.substr(5))) return e;
      } else if (!IsHostPort(a)) {
        return ConfigError{"--listen " + a +
                           ": want HOST:PORT (e.g. 127.0.0.1:8080), [V6]:PORT, unix:PATH or none"};
      }
      c.listen.push_back(a);
    }
  }
  if (!socket.empty()) {
    if (auto e = CheckUnixPath("--socket", socket)) return e;
    c.listen.push_back("unix:" + socket);
  }
  if (c.listen.empty()) {
    return ConfigError{"--listen none: nothing to listen on (pass --socket PATH)"};
  }

  // Data directory.
  if (c.data_dir.empty() || c.data_dir.front() != '/') {
    return ConfigError{"--data-dir " + c.data_dir + ": must be an absolute path"};
  }
  while (c.data_dir.size() > 1 && c.data_dir.back() == '/') c.data_dir.pop_back();
  {
    std::error_code ec;
    if (fs::exists(c.data_dir, ec) && !fs::is_directory(c.data_dir, ec)) {
      return ConfigError{"--data-dir " + c.data_dir + ": not a directory"};
    }
  }

  // Backend.
  {
    std::string b = c.backend;
    std::transform(b.begin(), b.end(), b.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    if (b == "cloud-hypervisor") b = "cloudhypervisor";
    auto kind = model::ParseBackendKind(b);
    if (!kind) {
      return ConfigError{"--backend " + c.backend +
                         ": unknown backend (want qemu, firecracker or cloud-hypervisor)"};
    }
    if (*kind != model::BackendKind::kQemu) {
      return ConfigError{"--backend " + c.backend + ": not available in this build (only qemu is)"};
    }
    c.backend = std::string(model::BackendName(*kind));
  }

  // Authentication.
  if (!c.dev_tokens && c.jwt_keys.empty() && c.jwks_file.empty()) {
    return ConfigError{"no authentication configured: pass --dev-tokens or --jwt-key/--jwks-file"};
  }
  if (c.jwt_customer_claim.empty()) {
    return ConfigError{"--jwt-customer-claim: must not be empty"};
  }
  if (c.jwt_issuer && c.jwt_issuer->empty()) c.jwt_issuer.reset();
  if (c.jwt_audience && c.jwt_audience->empty()) c.jwt_audience.reset();

  // Image roots.
  if (c.image_roots.empty()) {
    std::string def = c.data_dir + "/images";
    std::error_code ec;
    if (!fs::is_directory(def, ec)) {
      return ConfigError{"--image-root: required (the default " + def + " does not exist)"};
    }
    c.image_roots.push_back(def);
  }
  for (const std::string& root : c.image_roots) {
    if (root.empty() || root.front() != '/') {
      return ConfigError{"--image-root " + root + ": must be an absolute path"};
    }
    std::error_code ec;
    if (!fs::is_directory(root, ec)) {
      return ConfigError{"--image-root " + root + ": not a directory"};
    }
  }

  // QEMU.
  if (c.accel != "auto" && c.accel != "kvm" && c.accel != "tcg") {
    return ConfigError{"--accel " + c.accel + ": want auto, kvm or tcg"};
  }
  if (!c.kvm_probe_initrd.empty() && c.kvm_probe_kernel.empty()) {
    return ConfigError{"--kvm-probe-initrd: needs --kvm-probe-kernel"};
  }

  // Networking.
  {
    auto cidr = net::ParseIpv4Cidr(c.network_cidr);
    if (!cidr.ok()) {
      return ConfigError{"--network-cidr " + c.network_cidr + ": " + cidr.status().message()};
    }
    const std::string& p = c.network_prefix;
    bool ok = !p.empty() && p.size() <= 4 && p[0] >= 'a' && p[0] <= 'z' &&
              std::all_of(p.begin(), p.end(), [](char ch) {
                return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
              });
    if (!ok) {
      return ConfigError{"--network-prefix " + p +
                         ": want 1 to 4 characters of [a-z0-9], starting with a letter"};
    }
  }

  // Jail.
  if (c.uid_first == 0 || c.uid_first > c.uid_last) {
    return ConfigError{"--uid-range " + std::to_string(c.uid_first) + "-" +
                       std::to_string(c.uid_last) + ": want FIRST-LAST with 0 < FIRST <= LAST"};
  }
  if (!c.jail_base.empty() && c.jail_base[0] != '/') {
    return ConfigError{"--jail-base " + c.jail_base + ": must be an absolute path"};
  }
  if (!(c.cpu_ratio > 0.0 && c.cpu_ratio <= 64.0)) {
    return ConfigError{"--cpu-ratio " + std::to_string(c.cpu_ratio) +
                       ": must be more than 0 and at most 64"};
  }
  if (c.customer_cpus_max < 0 || c.customer_cpus_max > 4096) {
    return ConfigError{"--customer-cpus-max " + std::to_string(c.customer_cpus_max) +
                       ": must be between 0 (no cap) and 4096"};
  }
  if ((c.customer_memory_max_mib > 0 || c.customer_cpus_max > 0) && !c.jail) {
    return ConfigError{"--customer-memory-max-mib/--customer-cpus-max: need --jail (cgroups)"};
  }
  if (!c.writable_disk_dir.empty()) {
    std::error_code ec;
    if (c.writable_disk_dir[0] != '/' || !std::filesystem::is_directory(c.writable_disk_dir, ec)) {
      return ConfigError{"--writable-disk-dir " + c.writable_disk_dir +
                         ": not an absolute, existing directory"};
    }
  }
  if (!c.writable_disk_dir.empty() && !c.jail) {
    return ConfigError{"--writable-disk-dir: needs --jail"};
  }

  if (c.max_vms_per_customer < 0) {
    return ConfigError{"--max-vms-per-customer " + std::to_string(c.max_vms_per_customer) +
                       ": must be 0 (unlimited) or more"};
  }
  if (c.handler_threads < 1 || c.handler_threads > 1024) {
    return ConfigError{"--handler-threads " + std::to_string(c.handler_threads) +
                       ": must be between 1 and 1024"};
  }

  // TLS.
  if (!c.tls_cert.empty() && c.tls_key.empty()) return ConfigError{"--tls-cert: needs --tls-key"};
  if (c.tls_cert.empty() && !c.tls_key.empty()) return ConfigError{"--tls-key: needs --tls-cert"};
  if (!c.tls_client_ca.empty() && c.tls_cert.empty()) {
    return ConfigError{"--tls-client-ca: needs --tls-cert and --tls-key"};
  }

  // Logging.
  if (c.log_format != "json" && c.log_format != "text") {
    return ConfigError{"--log-format " + c.log_format + ": want json or text"};
  }
  if (!observe::ParseLevel(c.log_level)) {
    return ConfigError{"--log-level " + c.log_level + ": want debug, info, warn or error"};
  }
  return std::nullopt;
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

ParseOutcome ParseConfig(const std::vector<std::string>& args, const EnvLookup& env) {
  ParseOutcome out;
  Config& c = out.config;
  std::vector<std::string> listen;
  std::string socket;
  std::vector<std::string> jwt_keys;
  std::string jwt_issuer;
  std::string jwt_audience;
  std::string uid_range = "900000-965535";

  CLI::App app{
      "metald: the VM lifecycle daemon. Every flag --some-flag can also be set with the "
      "environment variable METALD_SOME_FLAG (the flag wins).",
      "metald"};
  // (flag name without dashes, option) for the environment pass below.
  std::vector<std::pair<std::string, CLI::Option*>> opts;
  auto add = [&](const std::string& name, auto& var, const std::string& help) {
    CLI::Option* o = app.add_option("--" + name, var, help);
    opts.emplace_back(name, o);
    return o;
  };
  auto add_flag = [&](const std::string& name, bool& var, const std::string& help) {
    CLI::Option* o = app.add_flag("--" + name, var, help);
    opts.emplace_back(name, o);
    return o;
  };

  add("listen", listen,
      "TCP address to serve on, repeatable; \"none\" disables TCP (default 127.0.0.1:8080)")
      ->delimiter(',');
  add("socket", socket, "Also serve on this unix socket path");
  add("data-dir", c.data_dir, "Holds metald.db, leases.db and vms/")->capture_default_str();
  add("backend", c.backend,
      "VMM backend: qemu (firecracker and cloud-hypervisor: not in this build)")
      ->capture_default_str();
  add_flag("dev-tokens", c.dev_tokens,
           "Accept 'Bearer dev_customer_<id>' tokens (never in production; also "
           "METALD_AUTH_DEV_TOKENS=true)");
  add("jwt-key", jwt_keys,
      "JWT verification key ALG:PATH or ALG:KID:PATH, repeatable (HS256: secret file; RS256, "
      "ES256: PEM public key)")
      ->delimiter(',');
  add("jwks-file", c.jwks_file, "JWKS file with verification keys");
  add("jwt-issuer", jwt_issuer, "Required 'iss' claim");
  add("jwt-audience", jwt_audience, "Required 'aud' claim");
  add("jwt-customer-claim", c.jwt_customer_claim, "Claim holding the customer id")
      ->capture_default_str();
  add("image-root", c.image_roots,
      "Directory VM kernels, initrds and disks must be in, repeatable (default <data-dir>/images "
      "when it exists)")
      ->delimiter(',');
  add("qemu-binary", c.qemu_binary, "qemu-system-x86_64 to run (default: from PATH)");
  add("accel", c.accel, "auto, kvm or tcg")->capture_default_str();
  add("kvm-probe-kernel", c.kvm_probe_kernel,
      "Guest kernel booted once to prove KVM works (accel auto)");
  add("kvm-probe-initrd", c.kvm_probe_initrd, "Initrd for --kvm-probe-kernel");
  add_flag("network", c.network, "Give VMs host networking (bridge, TAP, nftables; needs root)");
  add("network-cidr", c.network_cidr, "Guest IPv4 pool")->capture_default_str();
  add("network-prefix", c.network_prefix, "Prefix of host network object names")
      ->capture_default_str();
  add("nat-uplink", c.nat_uplink, "Masquerade guest traffic leaving by this link");
  add_flag("jail", c.jail,
           "Run every VMM jailed: chroot, own uid/gid, cgroups, no capabilities (needs root)");
  add("jail-base", c.jail_base, "Directory holding the jails (default <data-dir>/jail)");
  add("uid-range", uid_range, "Per-VM uids FIRST-LAST for jailed VMMs")->capture_default_str();
  add("cgroup-root", c.cgroup_root, "Name of metald's cgroup in each hierarchy")
      ->capture_default_str();
  add("cpu-ratio", c.cpu_ratio, "cgroup CPU max = vCPUs x ratio")->capture_default_str();
  add("jail-memory-overhead-mib", c.jail_memory_overhead_mib,
      "cgroup memory max = guest memory + this")
      ->capture_default_str();
  add("customer-memory-max-mib", c.customer_memory_max_mib,
      "Cap on the memory of all VMs of one customer together (0 = none)")
      ->capture_default_str();
  add("customer-cpus-max", c.customer_cpus_max,
      "Cap on the host CPUs of all VMs of one customer together (0 = none)")
      ->capture_default_str();
  add("writable-disk-dir", c.writable_disk_dir,
      "Where writable disks of jailed VMs must be (default: none, read-only disks only)");
  add("max-vms-per-customer", c.max_vms_per_customer, "0 = unlimited")->capture_default_str();
  add("handler-threads", c.handler_threads, "Threads running RPC handlers")->capture_default_str();
  add("tls-cert", c.tls_cert, "PEM certificate chain for TCP listeners");
  add("tls-key", c.tls_key, "PEM private key for --tls-cert");
  add("tls-client-ca", c.tls_client_ca, "PEM CAs; clients must present a certificate (mTLS)");
  add("log-format", c.log_format, "json or text")->capture_default_str();
  add("log-level", c.log_level, "debug, info, warn or error")->capture_default_str();
  add("ready-file", c.ready_file,
      "Once listening, write the bound addresses here (one per line, atomically)");

  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  if (argv.empty()) argv.push_back("metald");
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::CallForHelp&) {
    out.exit_code = 0;
    out.output = app.help();
    return out;
  } catch (const CLI::ParseError& e) {
    out.exit_code = 2;
    out.output = std::string("metald: ") + e.what() + " (see --help)";
    return out;
  }

  // The environment fills what the command line left unset.
  const bool dev_tokens_on_command_line = app.get_option("--dev-tokens")->count() > 0;
  for (auto& [name, opt] : opts) {
    if (opt->count() > 0) continue;
    std::string var = EnvName(name);
    std::optional<std::string> value = env(var);
    if (!value || value->empty()) continue;
    try {
      if (name == "dev-tokens" || name == "network" || name == "jail") {
        opt->add_result(IsTrue(*value) ? "true" : "false");
      } else {
        opt->add_result(*value);
      }
      opt->run_callback();
    } catch (const CLI::Error& e) {
      out.exit_code = 2;
      out.output = "metald: " + var + "=" + *value + ": " + e.what();
      return out;
    }
  }
  // METALD_AUTH_DEV_TOKENS=true (the name the issue uses) enables dev tokens too, unless the
  // command line set --dev-tokens itself.
  if (!dev_tokens_on_command_line) {
    if (auto v = env("METALD_AUTH_DEV_TOKENS"); v && IsTrue(*v)) c.dev_tokens = true;
  }

  for (const std::string& k : jwt_keys) {
    JwtKeyFlag key;
    if (auto e = ParseJwtKey(k, &key)) {
      out.exit_code = 2;
      out.output = "metald: " + e->message;
      return out;
    }
    c.jwt_keys.push_back(std::move(key));
  }
  {
    // FIRST-LAST, both decimal uids.
    size_t dash = uid_range.find('-');
    bool ok = dash != std::string::npos && dash > 0 && dash + 1 < uid_range.size() &&
              uid_range.find_first_not_of("0123456789-") == std::string::npos &&
              uid_range.find('-', dash + 1) == std::string::npos && dash <= 10 &&
              uid_range.size() - dash - 1 <= 10;
    uint64_t first = 0;
    uint64_t last = 0;
    if (ok) {
      first = std::stoull(uid_range.substr(0, dash));
      last = std::stoull(uid_range.substr(dash + 1));
      ok = first > 0 && first <= last && last < 0xFFFFFFFFull;
    }
    if (!ok) {
      out.exit_code = 2;
      out.output = "metald: --uid-range " + uid_range + ": want FIRST-LAST with 0 < FIRST <= LAST";
      return out;
    }
    c.uid_first = static_cast<uint32_t>(first);
    c.uid_last = static_cast<uint32_t>(last);
  }
  if (app.get_option("--jwt-issuer")->count() > 0) c.jwt_issuer = jwt_issuer;
  if (app.get_option("--jwt-audience")->count() > 0) c.jwt_audience = jwt_audience;

  if (auto e = Validate(c, listen, socket, app.get_option("--listen")->count() > 0)) {
    out.exit_code = 2;
    out.output = "metald: " + e->message;
    return out;
  }
  out.run = true;
  return out;
}

}  // namespace metald::daemon

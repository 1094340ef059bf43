#include "metald/cli/metalctl.h"

#include <google/protobuf/util/json_util.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "metald/base/status.h"
#include "metald/cli/format.h"
#include "metald/rpc/client.h"
#include "metald/rpc/metadata.h"
#include "metald/v1/vm.metald.h"
#include "metald/v1/vm.pb.h"

namespace metald::cli {
namespace {

// Extra time a call that waits on the server (wait, graceful shutdown) gets beyond its own
// timeout, so that the server's answer (deadline_exceeded or the result) arrives first.
constexpr std::chrono::seconds kWaitSlack{10};

struct Globals {
  std::string server = "http://127.0.0.1:8080";
  std::string token;
  std::string output = "table";
  std::string timeout = "60s";
};

struct CreateFlags {
  std::string kernel, initrd, cmdline, memory, idempotency_key, config_file;
  uint32_t vcpus = 0;  // 0: from --config, else 1.
  std::vector<std::string> disks, metadata;
  bool net = false;
  bool boot = false;
};

// What a command needs to talk to the server and print.
class Session {
 public:
  Session(const Globals& g, std::chrono::milliseconds timeout, std::ostream& out, std::ostream& err)
      : globals_(g), timeout_(timeout), out_(out), err_(err) {}

  // kExitOk when the client could be made; kExitUsage for a malformed --server.
  int Connect() {
    rpc::ClientOptions options;
    options.target = globals_.server;
    if (!globals_.token.empty()) options.headers.Add("authorization", "Bearer " + globals_.token);
    auto client = rpc::Client::Create(std::move(options));
    if (!client.ok()) {
      err_ << "metalctl: --server " << globals_.server << ": " << client.status().message() << "\n";
      return kExitUsage;
    }
    client_ = std::move(*client);
    stub_ = std::make_unique<v1::VmServiceClient>(client_.get());
    return kExitOk;
  }

  v1::VmServiceClient& stub() { return *stub_; }
  bool json() const { return globals_.output == "json"; }
  std::ostream& out() { return out_; }

  // Options for one call; `extra` is added to the default timeout (for calls that wait).
  rpc::CallOptions Call(std::chrono::milliseconds extra = std::chrono::milliseconds(0)) {
    rpc::CallOptions options;
    options.timeout = timeout_.count() == 0 ? timeout_ : timeout_ + extra;
    response_headers_ = rpc::Metadata();
    options.response_headers = &response_headers_;
    return options;
  }

  // Prints the error of the last call and returns its exit code.
  int Fail(const base::Status& status) {
    // No response at all: the connection failed (unavailable) or timed out while connecting.
    bool no_response = response_headers_.empty();
    bool connect_timeout = status.code() == base::StatusCode::kDeadlineExceeded &&
                           status.message().find("connecting") != std::string::npos;
    if (no_response && (status.code() == base::StatusCode::kUnavailable || connect_timeout)) {
      err_ << "metalctl: cannot reach " << globals_.server << ": " << status.message() << "\n";
      return kExitUnreachable;
    }
    err_ << "metalctl: " << base::StatusCodeName(status.code()) << ": " << status.message() << "\n";
    return kExitServerError;
  }

  // Prints `message` as proto3 JSON (pretty unless `compact`).
  void PrintJson(const google::protobuf::Message& message, bool compact = false) {
    google::protobuf::util::JsonPrintOptions options;
    options.add_whitespace = !compact;
    std::string text;
    (void)google::protobuf::util::MessageToJsonString(message, &text, options);
    while (!text.empty() && text.back() == '\n') text.pop_back();
    out_ << text << "\n";
  }

 private:
  const Globals& globals_;
  const std::chrono::milliseconds timeout_;
  std::ostream& out_;
  std::ostream& err_;
  std::unique_ptr<rpc::Client> client_;
  std::unique_ptr<v1::VmServiceClient> stub_;
  rpc::Metadata response_headers_;
};

// Builds the VmConfig of `create`: the --config file, then the flags on top.
base::Result<v1::VmConfig> BuildConfig(const CreateFlags& f) {
  v1::VmConfig config;
  if (!f.config_file.empty()) {
    std::ifstream in(f.config_file);
    if (!in) return base::InvalidArgumentError("--config " + f.config_file + ": cannot read");
    std::stringstream text;
    text << in.rdbuf();
    auto st = google::protobuf::util::JsonStringToMessage(text.str(), &config);
    if (!st.ok()) {
      return base::InvalidArgumentError(
          "--config " + f.config_file +
          ": not a VmConfig in proto3 JSON: " + std::string(st.message()));
    }
  }
  if (!f.kernel.empty()) config.mutable_boot()->set_kernel_path(f.kernel);
  if (!f.initrd.empty()) config.mutable_boot()->set_initrd_path(f.initrd);
  if (!f.cmdline.empty()) config.mutable_boot()->set_kernel_args(f.cmdline);
  if (f.vcpus > 0) config.mutable_cpu()->set_vcpu_count(f.vcpus);
  if (config.cpu().vcpu_count() == 0) config.mutable_cpu()->set_vcpu_count(1);
  if (!f.memory.empty()) {
    ASSIGN_OR_RETURN(uint64_t bytes, ParseMemorySize(f.memory));
    config.mutable_memory()->set_size_bytes(bytes);
  }
  if (config.memory().size_bytes() == 0) config.mutable_memory()->set_size_bytes(256ull << 20);
  if (!f.disks.empty()) {
    config.clear_storage();
    for (size_t i = 0; i < f.disks.size(); ++i) {
      ASSIGN_OR_RETURN(v1::StorageDevice disk,
                       ParseDiskSpec(f.disks[i], "disk" + std::to_string(i)));
      *config.add_storage() = std::move(disk);
    }
  }
  if (f.net && config.network_size() == 0) config.add_network()->set_id("eth0");
  for (const std::string& kv : f.metadata) {
    ASSIGN_OR_RETURN(auto pair, ParseMetadata(kv));
    (*config.mutable_metadata())[pair.first] = pair.second;
  }
  return config;
}

// Prints "ID  STATE" (table) or the response (json) of the simple state-changing commands.
int PrintState(Session& s, const std::string& id, const google::protobuf::Message& response,
               v1::VmState state) {
  if (s.json()) {
    s.PrintJson(response);
  } else {
    s.out() << FormatTable({"ID", "STATE"}, {{id, StateName(state)}});
  }
  return kExitOk;
}

}  // namespace

int RunMetalctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Globals g;
  CLI::App app{"metalctl: command-line client of metald (metald.v1.VmService)", "metalctl"};
  app.require_subcommand(1);
  // Global flags work after the subcommand too ("metalctl list -o json"); a subcommand's own
  // flag of the same name (shutdown --timeout, wait --timeout) takes precedence there.
  app.fallthrough();
  app.add_option("--server", g.server,
                 "http://HOST:PORT, HOST:PORT or unix:/path (env METALD_SERVER)")
      ->envname("METALD_SERVER")
      ->capture_default_str();
  app.add_option("--token", g.token, "Bearer token (env METALD_TOKEN)")->envname("METALD_TOKEN");
  app.add_option("--output,-o", g.output, "table or json (proto3 JSON of the response)")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  app.add_option("--timeout", g.timeout, "Per-call timeout, e.g. 60s, 5m; 0 = none")
      ->capture_default_str();

  // create
  CreateFlags cf;
  CLI::App* create = app.add_subcommand("create", "Create a VM (prints its id and state)");
  create->add_option("--kernel", cf.kernel, "Kernel image (under the daemon's image roots)");
  create->add_option("--initrd", cf.initrd, "Initrd");
  create->add_option("--cmdline", cf.cmdline, "Extra kernel command line");
  create->add_option("--vcpus", cf.vcpus, "Virtual CPUs (default 1)");
  create->add_option("--memory", cf.memory, "Memory: 256M, 1G, ... (default 256M)");
  create->add_option("--disk", cf.disks, "PATH[:ro][:root], repeatable");
  create->add_flag("--net", cf.net, "One network interface (address allocated by the daemon)");
  create->add_option("--metadata", cf.metadata, "KEY=VALUE, repeatable");
  create->add_option("--idempotency-key", cf.idempotency_key, "Retry-safe create key");
  create->add_option("--config", cf.config_file, "VmConfig in proto3 JSON (flags override)");
  create->add_flag("--boot", cf.boot, "Boot the VM after creating it");

  // Commands on one VM.
  std::string id;
  auto id_command = [&](const char* name, const char* help) {
    CLI::App* sub = app.add_subcommand(name, help);
    sub->add_option("ID", id, "VM id")->required();
    return sub;
  };
  CLI::App* boot = id_command("boot", "Boot a CREATED or STOPPED VM");
  CLI::App* pause = id_command("pause", "Pause a RUNNING VM");
  CLI::App* resume = id_command("resume", "Resume a PAUSED VM");
  CLI::App* reboot = id_command("reboot", "Reboot a RUNNING VM (hard reset)");
  CLI::App* shutdown = id_command("shutdown", "Shut a VM down (graceful unless --force)");
  bool force = false;
  std::string shutdown_timeout = "30s";
  shutdown->add_flag("--force", force, "Stop the VMM at once");
  shutdown->add_option("--timeout", shutdown_timeout, "Graceful shutdown timeout")
      ->capture_default_str();
  CLI::App* del = id_command("delete", "Delete a VM");
  del->add_flag("--force", force, "Delete a RUNNING or PAUSED VM too");
  CLI::App* get = id_command("get", "Show a VM");

  // list
  CLI::App* list = app.add_subcommand("list", "List VMs");
  std::vector<std::string> states;
  uint32_t page_size = 0;
  bool all = false;
  list->add_option("--state", states, "Only VMs in this state (RUNNING, running, ...), repeatable");
  list->add_option("--page-size", page_size, "VMs per page (server default when 0)");
  list->add_flag("--all", all, "Follow page tokens to the end");

  // wait
  CLI::App* wait = id_command("wait", "Wait until a VM is in one of the given states");
  std::string wait_timeout = "60s";
  wait->add_option("--state", states, "Target state, repeatable")->required();
  wait->add_option("--timeout", wait_timeout, "Give up after this long")->capture_default_str();

  // watch
  CLI::App* watch = app.add_subcommand("watch", "Print VM state changes until interrupted");
  std::string watch_id;
  std::string cursor;
  watch->add_option("ID", watch_id, "Only this VM");
  watch->add_option("--cursor", cursor, "Resume after this event cursor");

  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  if (argv.empty()) argv.push_back("metalctl");
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::CallForHelp&) {
    // `metalctl get --help` shows the subcommand's help, `metalctl --help` the overview.
    std::vector<CLI::App*> subs = app.get_subcommands();
    out << (subs.empty() ? app.help() : subs.back()->help());
    return kExitOk;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    err << "metalctl: " << e.what() << " (see --help)\n";
    return kExitUsage;
  }

  auto usage = [&](const base::Status& st) {
    err << "metalctl: " << st.message() << "\n";
    return kExitUsage;
  };
  auto timeout = ParseDuration(g.timeout);
  if (!timeout.ok()) return usage(timeout.status().WithContext("--timeout"));
  std::vector<v1::VmState> state_values;
  for (const std::string& name : states) {
    auto st = ParseStateName(name);
    if (!st.ok()) return usage(st.status().WithContext("--state"));
    state_values.push_back(*st);
  }

  Session s(g, *timeout, out, err);

  if (create->parsed()) {
    auto config = BuildConfig(cf);
    if (!config.ok()) return usage(config.status());
    if (int rc = s.Connect(); rc != kExitOk) return rc;
    v1::CreateVmRequest request;
    *request.mutable_config() = std::move(*config);
    request.set_idempotency_key(cf.idempotency_key);
    auto created = s.stub().CreateVm(request, s.Call());
    if (!created.ok()) return s.Fail(created.status());
    v1::CreateVmResponse response = std::move(*created);
    if (cf.boot) {
      v1::BootVmRequest boot_request;
      boot_request.set_vm_id(response.vm_id());
      auto booted = s.stub().BootVm(boot_request, s.Call());
      if (!booted.ok()) {
        err << "metalctl: created " << response.vm_id() << " but boot failed\n";
        return s.Fail(booted.status());
      }
      response.set_state(booted->state());
      response.mutable_vm()->set_state(booted->state());
    }
    return PrintState(s, response.vm_id(), response, response.state());
  }

  if (int rc = s.Connect(); rc != kExitOk) return rc;

  if (boot->parsed()) {
    v1::BootVmRequest request;
    request.set_vm_id(id);
    auto r = s.stub().BootVm(request, s.Call());
    if (!r.ok()) return s.Fail(r.status());
    return PrintState(s, id, *r, r->state());
  }
  if (pause->parsed()) {
    v1::PauseVmRequest request;
    request.set_vm_id(id);
    auto r = s.stub().PauseVm(request, s.Call());
    if (!r.ok()) return s.Fail(r.status());
    return PrintState(s, id, *r, r->state());
  }
  if (resume->parsed()) {
    v1::ResumeVmRequest request;
    request.set_vm_id(id);
    auto r = s.stub().ResumeVm(request, s.Call());
    if (!r.ok()) return s.Fail(r.status());
    return PrintState(s, id, *r, r->state());
  }
  if (reboot->parsed()) {
    v1::RebootVmRequest request;
    request.set_vm_id(id);
    auto r = s.stub().RebootVm(request, s.Call());
    if (!r.ok()) return s.Fail(r.status());
    return PrintState(s, id, *r, r->state());
  }
  if (shutdown->parsed()) {
    auto grace = ParseDuration(shutdown_timeout);
    if (!grace.ok()) return usage(grace.status().WithContext("shutdown --timeout"));
    v1::ShutdownVmRequest request;
    request.set_vm_id(id);
    request.set_force(force);
    request.mutable_timeout()->set_seconds(grace->count() / 1000);
    request.mutable_timeout()->set_nanos(static_cast<int32_t>(grace->count() % 1000) * 1'000'000);
    auto r = s.stub().ShutdownVm(request, s.Call(*grace + kWaitSlack));
    if (!r.ok()) return s.Fail(r.status());
    if (s.json()) {
      s.PrintJson(*r);
    } else {
      out << FormatTable({"ID", "STATE", "GRACEFUL"},
                         {{id, StateName(r->state()), r->graceful() ? "yes" : "no"}});
    }
    return kExitOk;
  }
  if (del->parsed()) {
    v1::DeleteVmRequest request;
    request.set_vm_id(id);
    request.set_force(force);
    auto r = s.stub().DeleteVm(request, s.Call());
    if (!r.ok()) return s.Fail(r.status());
    if (s.json()) {
      s.PrintJson(*r);
    } else {
      out << "deleted " << id << "\n";
    }
    return kExitOk;
  }
  if (get->parsed()) {
    v1::GetVmInfoRequest request;
    request.set_vm_id(id);
    auto r = s.stub().GetVmInfo(request, s.Call());
    if (!r.ok()) return s.Fail(r.status());
    if (s.json()) {
      s.PrintJson(*r);
    } else {
      out << FormatVmDetail(r->vm());
    }
    return kExitOk;
  }
  if (list->parsed()) {
    v1::ListVmsRequest request;
    request.set_page_size(page_size);
    for (v1::VmState st : state_values) request.add_state_filter(st);
    v1::ListVmsResponse all_pages;
    while (true) {
      auto r = s.stub().ListVms(request, s.Call());
      if (!r.ok()) return s.Fail(r.status());
      for (v1::VmInfo& vm : *r->mutable_vms()) *all_pages.add_vms() = std::move(vm);
      all_pages.set_next_page_token(r->next_page_token());
      if (!all || r->next_page_token().empty()) break;
      request.set_page_token(r->next_page_token());
    }
    if (s.json()) {
      s.PrintJson(all_pages);
    } else {
      out << FormatVmList({all_pages.vms().begin(), all_pages.vms().end()});
      if (!all_pages.next_page_token().empty()) {
        out << "(more: --all, or the next page token " << all_pages.next_page_token() << ")\n";
      }
    }
    return kExitOk;
  }
  if (wait->parsed()) {
    auto limit = ParseDuration(wait_timeout);
    if (!limit.ok()) return usage(limit.status().WithContext("wait --timeout"));
    v1::WaitVmRequest request;
    request.set_vm_id(id);
    for (v1::VmState st : state_values) request.add_states(st);
    request.mutable_timeout()->set_seconds(limit->count() / 1000);
    request.mutable_timeout()->set_nanos(static_cast<int32_t>(limit->count() % 1000) * 1'000'000);
    auto r = s.stub().WaitVm(request, s.Call(*limit + kWaitSlack));
    if (!r.ok()) return s.Fail(r.status());
    return PrintState(s, id, *r, r->vm().state());
  }
  if (watch->parsed()) {
    v1::WatchVmEventsRequest request;
    request.set_vm_id(watch_id);
    request.set_cursor(cursor);
    rpc::CallOptions options = s.Call();
    options.timeout = std::chrono::milliseconds(0);  // Until interrupted.
    base::Status st = s.stub().WatchVmEvents(
        request,
        [&](const v1::VmEvent& event) {
          if (s.json()) {
            s.PrintJson(event, /*compact=*/true);
          } else {
            out << FormatEvent(event) << "\n";
          }
          out.flush();
          return true;
        },
        options);
    if (!st.ok()) return s.Fail(st);
    return kExitOk;
  }
  return usage(base::InvalidArgumentError("No command given (see --help)"));
}

}  // namespace metald::cli

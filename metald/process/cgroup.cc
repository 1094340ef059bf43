#include "metald/process/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <thread>
#include <utility>

namespace metald::process {
namespace {

using base::Result;
using base::Status;

// The v1 control files that carry no dot; a group of that name could not be made.
constexpr std::string_view kReservedNames[] = {"tasks", "notify_on_release", "release_agent"};

// How long Remove retries a group the kernel still reports busy (EBUSY) right after its last
// process exited: kRemoveTries * kRemoveBackoff.
constexpr int kRemoveTries = 50;
constexpr std::chrono::milliseconds kRemoveBackoff(20);

// Minimum CFS quota the kernel accepts (1 ms).
constexpr int64_t kMinQuotaUs = 1000;

Status ErrnoStatus(std::string_view op, const std::string& path, int err) {
  std::string msg = std::string(op) + " " + path + ": " + std::strerror(err) + " (errno " +
                    std::to_string(err) + ")";
  switch (err) {
    case ENOENT:
      return base::NotFoundError(std::move(msg));
    case EEXIST:
      return base::AlreadyExistsError(std::move(msg));
    case EBUSY:
      return base::UnavailableError(std::move(msg));
    case ENOTEMPTY:
      return base::FailedPreconditionError(std::move(msg));
    case EACCES:
    case EPERM:
    case EROFS:
      return base::PermissionDeniedError(std::move(msg));
    case EINVAL:
    case ENODEV:
    case ERANGE:
      return base::InvalidArgumentError(std::move(msg));
    default:
      return base::InternalError(std::move(msg));
  }
}

class RealCgroupFs : public CgroupFs {
 public:
  Status MakeDir(const std::string& path) override {
    if (::mkdir(path.c_str(), 0755) != 0) return ErrnoStatus("mkdir", path, errno);
    return base::OkStatus();
  }
  Status RemoveDir(const std::string& path) override {
    if (::rmdir(path.c_str()) != 0) return ErrnoStatus("rmdir", path, errno);
    return base::OkStatus();
  }
  Status WriteFile(const std::string& path, std::string_view value) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("open", path, errno);
    ssize_t n;
    do {
      n = ::write(fd, value.data(), value.size());
    } while (n < 0 && errno == EINTR);
    int err = errno;
    ::close(fd);
    if (n < 0) return ErrnoStatus("write \"" + std::string(value) + "\" to", path, err);
    if (static_cast<size_t>(n) != value.size())
      return base::InternalError("write " + path + ": short write");
    return base::OkStatus();
  }
  Result<std::string> ReadFile(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("open", path, errno);
    std::string out;
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int err = errno;
        ::close(fd);
        return ErrnoStatus("read", path, err);
      }
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
  }
  bool Exists(const std::string& path) override { return ::access(path.c_str(), F_OK) == 0; }
  Result<std::vector<std::string>> ListDirs(const std::string& path) override {
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) return ErrnoStatus("opendir", path, errno);
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(dir)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      bool is_dir = e->d_type == DT_DIR;
      if (e->d_type == DT_UNKNOWN) {
        struct stat st;
        is_dir = ::stat((path + "/" + name).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
      }
      if (is_dir) names.push_back(std::move(name));
    }
    ::closedir(dir);
    std::sort(names.begin(), names.end());
    return names;
  }
};

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  for (std::string_view r : kReservedNames)
    if (name == r) return false;
  return true;
}

Status CheckIds(const std::string& customer_id, const std::string& vm_id) {
  if (!ValidName(customer_id))
    return base::InvalidArgumentError("Customer id \"" + customer_id +
                                      "\" is not [A-Za-z0-9_-]{1,64}");
  if (!ValidName(vm_id))
    return base::InvalidArgumentError("VM id \"" + vm_id + "\" is not [A-Za-z0-9_-]{1,64}");
  return base::OkStatus();
}

bool ValidParent(std::string_view parent) {
  if (parent.empty()) return true;
  size_t start = 0;
  while (start <= parent.size()) {
    size_t end = parent.find('/', start);
    if (end == std::string_view::npos) end = parent.size();
    std::string_view part = parent.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    for (char c : part) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '-' || c == '.' || c == '@';
      if (!ok) return false;
    }
    start = end + 1;
  }
  return true;
}

std::vector<std::string> Split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string_view::npos) end = s.size();
    if (end > start) out.emplace_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// /proc/self/mounts escapes space, tab, newline and backslash as \ooo.
std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (size_t j = 1; j <= 3; ++j) {
        char c = s[i + j];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

struct Mount {
  std::string path;
  std::string type;                  // "cgroup" or "cgroup2"
  std::vector<std::string> options;  // v1: includes the controller names
};

std::vector<Mount> ParseCgroupMounts(std::string_view text) {
  std::vector<Mount> out;
  for (const std::string& line : Split(text, '\n')) {
    std::vector<std::string> f = Split(line, ' ');
    if (f.size() < 4) continue;
    if (f[2] != "cgroup" && f[2] != "cgroup2") continue;
    out.push_back(Mount{Unescape(f[1]), f[2], Split(f[3], ',')});
  }
  return out;
}

bool Contains(const std::vector<std::string>& v, std::string_view x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

std::string Join(const std::string& a, const std::string& b) {
  if (b.empty()) return a;
  return a + "/" + b;
}

// Value of `key` in a "key value\n" file (cpu.stat, memory.events, memory.oom_control).
// A decimal number, ignoring trailing whitespace; nullopt for anything else ("max", "-1").
std::optional<uint64_t> ParseU64(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

// Value of `key` in a "key value\n" file (cpu.stat, memory.events, memory.oom_control).
std::optional<uint64_t> KeyedValue(std::string_view text, std::string_view key) {
  for (const std::string& line : Split(text, '\n')) {
    std::vector<std::string> f = Split(line, ' ');
    if (f.size() == 2 && f[0] == key) return ParseU64(f[1]);
  }
  return std::nullopt;
}

int64_t QuotaUs(double cpus, uint64_t period_us) {
  int64_t q = std::llround(cpus * static_cast<double>(period_us));
  return std::max<int64_t>(kMinQuotaUs, q);
}

// The v1 controllers each managed controller maps to ("io" is "blkio" on v1).
std::string V1Name(std::string_view controller) {
  return controller == "io" ? "blkio" : std::string(controller);
}

}  // namespace

CgroupFs* CgroupFs::Default() {
  static RealCgroupFs* fs = new RealCgroupFs();
  return fs;
}

Result<std::unique_ptr<CgroupManager>> CgroupManager::Open(CgroupOptions options) {
  if (!ValidName(options.root_name))
    return base::InvalidArgumentError("root_name \"" + options.root_name +
                                      "\" is not [A-Za-z0-9_-]{1,64}");
  if (!ValidParent(options.parent))
    return base::InvalidArgumentError("parent \"" + options.parent +
                                      "\" is not a relative path of plain names");
  if (!(options.cpu_ratio > 0) || !std::isfinite(options.cpu_ratio))
    return base::InvalidArgumentError("cpu_ratio must be > 0");
  if (options.cpu_period_us < 1000 || options.cpu_period_us > 1000000)
    return base::InvalidArgumentError("cpu_period_us must be in 1000..1000000");
  if (options.default_pids_max == 0 || options.default_pids_max < -1)
    return base::InvalidArgumentError("default_pids_max must be > 0 or -1");
  CgroupFs* fs = options.fs != nullptr ? options.fs : CgroupFs::Default();

  auto mounts_text = fs->ReadFile(options.mounts_file);
  if (!mounts_text.ok()) return mounts_text.status().WithContext("Reading cgroup mounts");
  std::vector<Mount> mounts = ParseCgroupMounts(*mounts_text);

  // v2: the first cgroup2 mount; its controllers are those listed at <mount>/<parent>.
  std::string v2_mount;
  std::vector<std::string> v2_controllers;
  for (const Mount& m : mounts) {
    if (m.type != "cgroup2") continue;
    v2_mount = m.path;
    auto listed = fs->ReadFile(Join(Join(m.path, options.parent), "cgroup.controllers"));
    if (listed.ok()) {
      for (const std::string& line : Split(*listed, '\n'))
        for (const std::string& c : Split(line, ' ')) v2_controllers.push_back(c);
    }
    break;
  }

  std::vector<Hierarchy> hierarchies;
  auto place = [&](const std::string& mount, bool v2, const std::string& name) {
    for (Hierarchy& h : hierarchies) {
      if (h.mount == mount) {
        h.controllers.push_back(name);
        return;
      }
    }
    hierarchies.push_back(
        Hierarchy{mount, v2, {name}, Join(Join(mount, options.parent), options.root_name)});
  };
  auto find_v1 = [&](const std::string& name) -> const Mount* {
    for (const Mount& m : mounts)
      if (m.type == "cgroup" && Contains(m.options, name)) return &m;
    return nullptr;
  };
  bool cpu_on_v1 = false;
  for (std::string_view controller : {"memory", "cpu", "pids", "io"}) {
    std::string name(controller);
    if (!v2_mount.empty() && Contains(v2_controllers, name)) {
      place(v2_mount, true, name);
      continue;
    }
    if (const Mount* m = find_v1(V1Name(name))) {
      place(m->path, false, V1Name(name));
      if (name == "cpu") cpu_on_v1 = true;
      continue;
    }
    if (name == "io") continue;  // optional
    std::string v2_desc =
        v2_mount.empty() ? "no cgroup2 mount" : "cgroup v2 at " + v2_mount + " does not list it";
    return base::UnavailableError("cgroup controller " + name + " is not available (" + v2_desc +
                                  ", and no cgroup v1 mount has it)");
  }
  if (cpu_on_v1) {
    if (const Mount* m = find_v1("cpuacct")) place(m->path, false, "cpuacct");
  }

  // The root group in each hierarchy; on v2 the controllers are enabled down to it so that the
  // customer groups made beneath it get them.
  for (const Hierarchy& h : hierarchies) {
    std::string parent_dir = Join(h.mount, options.parent);
    if (h.v2) {
      for (const std::string& c : h.controllers)
        RETURN_IF_ERROR(fs->WriteFile(Join(parent_dir, "cgroup.subtree_control"), "+" + c)
                            .WithContext("Enabling cgroup v2 controller " + c));
    }
    Status st = fs->MakeDir(h.root);
    if (!st.ok() && st.code() != base::StatusCode::kAlreadyExists)
      return st.WithContext("Making the metald cgroup");
    if (h.v2) {
      for (const std::string& c : h.controllers)
        RETURN_IF_ERROR(fs->WriteFile(Join(h.root, "cgroup.subtree_control"), "+" + c)
                            .WithContext("Enabling cgroup v2 controller " + c));
    }
  }
  return std::unique_ptr<CgroupManager>(new CgroupManager(std::move(options), hierarchies));
}

CgroupManager::CgroupManager(CgroupOptions options, std::vector<Hierarchy> hierarchies)
    : options_(std::move(options)),
      fs_(options_.fs != nullptr ? options_.fs : CgroupFs::Default()),
      hierarchies_(std::move(hierarchies)) {}

const CgroupManager::Hierarchy* CgroupManager::HierarchyFor(std::string_view controller) const {
  for (const Hierarchy& h : hierarchies_) {
    if (Contains(h.controllers, controller)) return &h;
    if (controller == "io" && Contains(h.controllers, "blkio")) return &h;
  }
  return nullptr;
}

CgroupVersion CgroupManager::version(std::string_view controller) const {
  const Hierarchy* h = HierarchyFor(controller);
  if (h == nullptr) return CgroupVersion::kNone;
  return h->v2 ? CgroupVersion::kV2 : CgroupVersion::kV1;
}

std::string CgroupManager::Mode() const {
  std::string out;
  for (std::string_view c : {"memory", "cpu", "pids", "io", "cpuacct"}) {
    if (!out.empty()) out += ' ';
    out += std::string(c) + "=";
    const Hierarchy* h = HierarchyFor(c);
    if (h == nullptr)
      out += "none";
    else
      out += (h->v2 ? "v2(" : "v1(") + h->mount + ")";
  }
  return out;
}

std::vector<std::string> CgroupManager::RootDirs() const {
  std::vector<std::string> out;
  for (const Hierarchy& h : hierarchies_) out.push_back(h.root);
  return out;
}

VmCgroup CgroupManager::MakeVmCgroup(const std::string& customer_id,
                                     const std::string& vm_id) const {
  VmCgroup vm{customer_id, vm_id, {}, {}};
  for (const Hierarchy& h : hierarchies_) {
    std::string dir = h.root + "/" + customer_id + "/" + vm_id;
    vm.procs_files.push_back(dir + "/cgroup.procs");
    vm.dirs.push_back(std::move(dir));
  }
  return vm;
}

namespace {

// v1 requires memsw >= limit at every moment: raise memsw first, lower the limit first.
Status WriteV1Memory(CgroupFs* fs, const std::string& dir, int64_t bytes /* -1 = unlimited */) {
  std::string limit_file = dir + "/memory.limit_in_bytes";
  std::string memsw_file = dir + "/memory.memsw.limit_in_bytes";
  std::string value = std::to_string(bytes);
  if (!fs->Exists(memsw_file)) return fs->WriteFile(limit_file, value);
  auto current = fs->ReadFile(limit_file);
  if (!current.ok()) return current.status();
  std::optional<uint64_t> cur = ParseU64(*current);
  bool raising = bytes < 0 || (cur.has_value() && static_cast<uint64_t>(bytes) >= *cur);
  if (raising) {
    RETURN_IF_ERROR(fs->WriteFile(memsw_file, value));
    return fs->WriteFile(limit_file, value);
  }
  RETURN_IF_ERROR(fs->WriteFile(limit_file, value));
  return fs->WriteFile(memsw_file, value);
}

}  // namespace

CustomerLimits CgroupManager::CustomerLimitsFor(const std::string& customer_id) const {
  auto it = customer_limits_.find(customer_id);
  return it != customer_limits_.end() ? it->second : options_.default_customer_limits;
}

Status CgroupManager::ApplyCustomerLimits(const std::string& customer_id,
                                          const CustomerLimits& limits) {
  if (const Hierarchy* h = HierarchyFor("memory")) {
    std::string dir = h->root + "/" + customer_id;
    if (fs_->Exists(dir)) {
      if (h->v2) {
        RETURN_IF_ERROR(
            fs_->WriteFile(dir + "/memory.max",
                           limits.memory_bytes == 0 ? "max" : std::to_string(limits.memory_bytes)));
      } else {
        RETURN_IF_ERROR(WriteV1Memory(
            fs_, dir, limits.memory_bytes == 0 ? -1 : static_cast<int64_t>(limits.memory_bytes)));
      }
    }
  }
  if (const Hierarchy* h = HierarchyFor("cpu")) {
    std::string dir = h->root + "/" + customer_id;
    if (fs_->Exists(dir)) {
      std::string period = std::to_string(options_.cpu_period_us);
      std::string quota = limits.cpus > 0
                              ? std::to_string(QuotaUs(limits.cpus, options_.cpu_period_us))
                              : std::string(h->v2 ? "max" : "-1");
      if (h->v2) {
        RETURN_IF_ERROR(fs_->WriteFile(dir + "/cpu.max", quota + " " + period));
      } else {
        RETURN_IF_ERROR(fs_->WriteFile(dir + "/cpu.cfs_period_us", period));
        RETURN_IF_ERROR(fs_->WriteFile(dir + "/cpu.cfs_quota_us", quota));
      }
    }
  }
  return base::OkStatus();
}

Status CgroupManager::WriteLimits(const std::string& customer_id, const VmCgroup& vm,
                                  const CgroupLimits& limits) {
  auto dir_of = [&](const Hierarchy* h) { return h->root + "/" + customer_id + "/" + vm.vm_id; };
  {
    const Hierarchy* h = HierarchyFor("memory");
    std::string dir = dir_of(h);
    if (h->v2) {
      RETURN_IF_ERROR(fs_->WriteFile(dir + "/memory.max", std::to_string(limits.memory_bytes)));
      if (fs_->Exists(dir + "/memory.swap.max"))
        RETURN_IF_ERROR(fs_->WriteFile(dir + "/memory.swap.max", "0"));
      // The whole VMM dies together on OOM rather than losing one thread.
      if (fs_->Exists(dir + "/memory.oom.group"))
        RETURN_IF_ERROR(fs_->WriteFile(dir + "/memory.oom.group", "1"));
    } else {
      RETURN_IF_ERROR(WriteV1Memory(fs_, dir, static_cast<int64_t>(limits.memory_bytes)));
    }
  }
  {
    const Hierarchy* h = HierarchyFor("cpu");
    std::string dir = dir_of(h);
    double cpus = limits.vcpus * options_.cpu_ratio;
    if (!h->v2) {
      const CustomerLimits caps = CustomerLimitsFor(customer_id);
      if (caps.cpus > 0) cpus = std::min(cpus, caps.cpus);
    }
    std::string period = std::to_string(options_.cpu_period_us);
    std::string quota = std::to_string(QuotaUs(cpus, options_.cpu_period_us));
    if (h->v2) {
      RETURN_IF_ERROR(fs_->WriteFile(dir + "/cpu.max", quota + " " + period));
    } else {
      RETURN_IF_ERROR(fs_->WriteFile(dir + "/cpu.cfs_period_us", period));
      RETURN_IF_ERROR(fs_->WriteFile(dir + "/cpu.cfs_quota_us", quota));
    }
  }
  {
    const Hierarchy* h = HierarchyFor("pids");
    int64_t pids = limits.pids_max == 0 ? options_.default_pids_max : limits.pids_max;
    RETURN_IF_ERROR(
        fs_->WriteFile(dir_of(h) + "/pids.max", pids < 0 ? "max" : std::to_string(pids)));
  }
  if (!limits.io.empty()) {
    const Hierarchy* h = HierarchyFor("io");
    std::string dir = dir_of(h);
    for (const CgroupIoLimit& io : limits.io) {
      std::string dev = std::to_string(io.major) + ":" + std::to_string(io.minor);
      if (h->v2) {
        std::string line = dev;
        auto add = [&](const char* key, uint64_t v) {
          line += std::string(" ") + key + "=" + (v == 0 ? "max" : std::to_string(v));
        };
        add("rbps", io.read_bps);
        add("wbps", io.write_bps);
        add("riops", io.read_iops);
        add("wiops", io.write_iops);
        RETURN_IF_ERROR(fs_->WriteFile(dir + "/io.max", line));
      } else {
        const std::pair<const char*, uint64_t> files[] = {
            {"blkio.throttle.read_bps_device", io.read_bps},
            {"blkio.throttle.write_bps_device", io.write_bps},
            {"blkio.throttle.read_iops_device", io.read_iops},
            {"blkio.throttle.write_iops_device", io.write_iops},
        };
        for (const auto& [file, v] : files)
          if (v != 0)
            RETURN_IF_ERROR(fs_->WriteFile(dir + "/" + file, dev + " " + std::to_string(v)));
      }
    }
  }
  return base::OkStatus();
}

Result<VmCgroup> CgroupManager::Create(const std::string& customer_id, const std::string& vm_id,
                                       const CgroupLimits& limits) {
  RETURN_IF_ERROR(CheckIds(customer_id, vm_id));
  if (limits.memory_bytes == 0) return base::InvalidArgumentError("memory_bytes must be > 0");
  if (limits.vcpus == 0) return base::InvalidArgumentError("vcpus must be > 0");
  if (limits.pids_max < -1) return base::InvalidArgumentError("pids_max must be >= -1");
  if (limits.memory_bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return base::InvalidArgumentError("memory_bytes is too large");
  if (!limits.io.empty() && HierarchyFor("io") == nullptr)
    return base::FailedPreconditionError("I/O limits need the io (v2) or blkio (v1) controller");

  std::lock_guard<std::mutex> lock(mu_);
  const std::string context = "Cgroup for VM " + customer_id + "/" + vm_id;
  VmCgroup vm = MakeVmCgroup(customer_id, vm_id);
  VmCgroup made = vm;  // the VM dirs this call made (for the undo)
  made.dirs.clear();

  auto undo = [&](Status st) {
    (void)RemoveVmDirs(made);
    RemoveCustomerDirsIfEmpty(customer_id);
    return st.WithContext(context);
  };

  bool made_customer = false;
  for (const Hierarchy& h : hierarchies_) {
    std::string dir = h.root + "/" + customer_id;
    Status st = fs_->MakeDir(dir);
    if (st.ok()) {
      made_customer = true;
    } else if (st.code() != base::StatusCode::kAlreadyExists) {
      return undo(st);
    }
    if (h.v2) {
      for (const std::string& c : h.controllers) {
        Status en = fs_->WriteFile(dir + "/cgroup.subtree_control", "+" + c);
        if (!en.ok()) return undo(en);
      }
    }
  }
  if (made_customer) {
    auto it = customer_limits_.find(customer_id);
    if (it != customer_limits_.end() || options_.default_customer_limits.memory_bytes > 0 ||
        options_.default_customer_limits.cpus > 0) {
      Status st = ApplyCustomerLimits(customer_id, CustomerLimitsFor(customer_id));
      if (!st.ok()) return undo(st);
    }
  }
  for (const std::string& dir : vm.dirs) {
    Status st = fs_->MakeDir(dir);
    if (!st.ok()) return undo(st);
    made.dirs.push_back(dir);
  }
  Status st = WriteLimits(customer_id, vm, limits);
  if (!st.ok()) return undo(st);
  return vm;
}

Result<VmCgroup> CgroupManager::Lookup(const std::string& customer_id, const std::string& vm_id) {
  RETURN_IF_ERROR(CheckIds(customer_id, vm_id));
  VmCgroup vm = MakeVmCgroup(customer_id, vm_id);
  for (const std::string& dir : vm.dirs)
    if (!fs_->Exists(dir)) return base::NotFoundError("No cgroup " + dir);
  return vm;
}

Status CgroupManager::RemoveVmDirs(const VmCgroup& vm) {
  Status first_error;
  for (const std::string& dir : vm.dirs) {
    Status st;
    for (int i = 0; i < kRemoveTries; ++i) {
      st = fs_->RemoveDir(dir);
      if (st.code() != base::StatusCode::kUnavailable) break;
      std::this_thread::sleep_for(kRemoveBackoff);
    }
    if (!st.ok() && st.code() != base::StatusCode::kNotFound && first_error.ok()) first_error = st;
  }
  return first_error;
}

void CgroupManager::RemoveCustomerDirsIfEmpty(const std::string& customer_id) {
  // The kernel refuses (EBUSY) to remove a group that still has child groups, so this never
  // removes a customer with VMs; any error just leaves the group for the next Remove.
  for (const Hierarchy& h : hierarchies_) (void)fs_->RemoveDir(h.root + "/" + customer_id);
}

Status CgroupManager::Remove(const std::string& customer_id, const std::string& vm_id) {
  RETURN_IF_ERROR(CheckIds(customer_id, vm_id));
  const std::string context = "Removing cgroup of VM " + customer_id + "/" + vm_id;
  VmCgroup vm = MakeVmCgroup(customer_id, vm_id);
  for (const std::string& file : vm.procs_files) {
    auto procs = fs_->ReadFile(file);
    if (!procs.ok()) {
      if (procs.status().code() == base::StatusCode::kNotFound) continue;
      return procs.status().WithContext(context);
    }
    std::vector<std::string> pids = Split(*procs, '\n');
    if (!pids.empty()) {
      std::string list;
      for (const std::string& p : pids) list += (list.empty() ? "" : " ") + p;
      return base::FailedPreconditionError(context + ": processes still in " + file + ": " + list);
    }
  }
  RETURN_IF_ERROR(RemoveVmDirs(vm).WithContext(context));
  std::lock_guard<std::mutex> lock(mu_);
  RemoveCustomerDirsIfEmpty(customer_id);
  return base::OkStatus();
}

Status CgroupManager::SetCustomerLimits(const std::string& customer_id,
                                        const CustomerLimits& limits) {
  if (!ValidName(customer_id))
    return base::InvalidArgumentError("Customer id \"" + customer_id +
                                      "\" is not [A-Za-z0-9_-]{1,64}");
  if (!(limits.cpus >= 0) || !std::isfinite(limits.cpus))
    return base::InvalidArgumentError("cpus must be >= 0");
  if (limits.memory_bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return base::InvalidArgumentError("memory_bytes is too large");
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(ApplyCustomerLimits(customer_id, limits)
                      .WithContext("Setting cgroup limits of customer " + customer_id));
  customer_limits_[customer_id] = limits;
  return base::OkStatus();
}

Result<CgroupUsage> CgroupManager::Usage(const VmCgroup& vm) {
  RETURN_IF_ERROR(CheckIds(vm.customer_id, vm.vm_id));
  auto dir_of = [&](const Hierarchy* h) { return h->root + "/" + vm.customer_id + "/" + vm.vm_id; };
  CgroupUsage u;
  {
    const Hierarchy* h = HierarchyFor("memory");
    std::string dir = dir_of(h);
    auto current = fs_->ReadFile(dir + (h->v2 ? "/memory.current" : "/memory.usage_in_bytes"));
    if (!current.ok()) return current.status();
    u.memory_bytes = ParseU64(*current).value_or(0);
    std::string peak_file = dir + (h->v2 ? "/memory.peak" : "/memory.max_usage_in_bytes");
    if (fs_->Exists(peak_file)) {
      auto peak = fs_->ReadFile(peak_file);
      if (peak.ok()) u.memory_peak_bytes = ParseU64(*peak).value_or(0);
    }
    auto events = fs_->ReadFile(dir + (h->v2 ? "/memory.events" : "/memory.oom_control"));
    if (events.ok()) u.oom_kills = KeyedValue(*events, "oom_kill").value_or(0);
  }
  if (const Hierarchy* h = HierarchyFor("cpu"); h != nullptr && h->v2) {
    auto stat = fs_->ReadFile(dir_of(h) + "/cpu.stat");
    if (stat.ok()) {
      if (auto usec = KeyedValue(*stat, "usage_usec")) {
        u.cpu_usage_ns = *usec * 1000;
        u.cpu_known = true;
      }
    }
  } else if (const Hierarchy* acct = HierarchyFor("cpuacct")) {
    auto usage = fs_->ReadFile(dir_of(acct) + "/cpuacct.usage");
    if (usage.ok()) {
      if (auto ns = ParseU64(*usage)) {
        u.cpu_usage_ns = *ns;
        u.cpu_known = true;
      }
    }
  }
  {
    auto current = fs_->ReadFile(dir_of(HierarchyFor("pids")) + "/pids.current");
    if (current.ok()) u.pids_current = static_cast<int64_t>(ParseU64(*current).value_or(0));
  }
  return u;
}

Result<std::vector<std::string>> CgroupManager::ListLeftovers() {
  std::vector<std::string> out;
  for (const Hierarchy& h : hierarchies_) {
    auto customers = fs_->ListDirs(h.root);
    if (!customers.ok()) {
      if (customers.status().code() == base::StatusCode::kNotFound) continue;
      return customers.status();
    }
    for (const std::string& c : *customers) {
      std::string cdir = h.root + "/" + c;
      out.push_back(cdir);
      auto vms = fs_->ListDirs(cdir);
      if (!vms.ok()) {
        if (vms.status().code() == base::StatusCode::kNotFound) continue;
        return vms.status();
      }
      for (const std::string& v : *vms) out.push_back(cdir + "/" + v);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

Status CgroupManager::RemoveRoot() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Hierarchy& h : hierarchies_) {
    auto customers = fs_->ListDirs(h.root);
    if (!customers.ok()) {
      if (customers.status().code() == base::StatusCode::kNotFound) continue;
      return customers.status();
    }
    for (const std::string& c : *customers) {
      std::string cdir = h.root + "/" + c;
      auto vms = fs_->ListDirs(cdir);
      if (vms.ok() && !vms->empty())
        return base::FailedPreconditionError("VM cgroup " + cdir + "/" + vms->front() + " remains");
      Status st = fs_->RemoveDir(cdir);
      if (!st.ok() && st.code() != base::StatusCode::kNotFound) return st;
    }
    Status st = fs_->RemoveDir(h.root);
    if (!st.ok() && st.code() != base::StatusCode::kNotFound) return st;
  }
  return base::OkStatus();
}

}  // namespace metald::process

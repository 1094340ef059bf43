// The qemu-system-x86_64 command line (pure).

#include <algorithm>

#include "metald/backend/qemu/qemu_backend.h"

namespace metald::backend::qemu {
namespace {

// QEMU option values ("key=value,key=value") escape a comma by doubling it.
std::string EscapeOptValue(std::string_view v) {
  std::string out;
  for (char c : v) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

}  // namespace

base::Result<std::vector<std::string>> BuildQemuArgs(const QemuLaunch& launch) {
  const model::VmSpec& spec = launch.spec;
  if (launch.binary.empty()) return base::InvalidArgumentError("No qemu-system-x86_64 binary");
  // The legacy -qmp / -serial forms cannot escape commas; the service picks these paths.
  for (const std::string* p : {&launch.qmp_socket, &launch.console_log}) {
    if (p->empty() || p->find(',') != std::string::npos) {
      return base::InvalidArgumentError("Path \"" + *p + "\" is empty or contains a comma");
    }
  }
  if (launch.tap_devices.size() != spec.network.size()) {
    return base::InvalidArgumentError("network has " + std::to_string(spec.network.size()) +
                                      " entries but " + std::to_string(launch.tap_devices.size()) +
                                      " TAP devices were given");
  }
  if (spec.boot.kernel_path.empty()) {
    return base::InvalidArgumentError("boot.kernel_path is required");
  }

  std::vector<std::string> a = {launch.binary};
  auto add = [&a](std::initializer_list<std::string> args) {
    a.insert(a.end(), args.begin(), args.end());
  };
  add({"-name", "guest=" + EscapeOptValue(launch.vm_id) + ",debug-threads=on"});
  // pit/rtc: without a PIT the guest kernel hangs calibrating its TSC under TCG. acpi: the
  // virtio-mmio devices are described by ACPI (the Debian kernel has no virtio_mmio.device=), and
  // system_powerdown becomes an ACPI power-button press.
  add({"-M", "microvm,pit=on,rtc=on,acpi=on"});
  if (launch.kvm) {
    add({"-accel", "kvm", "-cpu", "host"});
  } else {
    add({"-accel", "tcg"});
  }
  add({"-smp", std::to_string(spec.cpu.vcpu_count)});
  add({"-m", std::to_string(spec.memory.size_bytes >> 20) + "M"});
  add({"-nodefaults", "-no-user-config", "-nographic"});
  if (!launch.firmware_dir.empty()) add({"-L", launch.firmware_dir});
  add({"-S"});  // vCPUs stay stopped until Boot's "cont".
  // Modern virtio-mmio: virtio_input refuses legacy devices; net and blk work either way.
  add({"-global", "virtio-mmio.force-legacy=false"});
  add({"-qmp", "unix:" + launch.qmp_socket + ",server=on,wait=off"});
  add({"-serial", "file:" + launch.console_log});
  add({"-kernel", spec.boot.kernel_path});
  if (!spec.boot.initrd_path.empty()) add({"-initrd", spec.boot.initrd_path});

  std::string cmdline = launch.base_kernel_args;
  auto append = [&cmdline](std::string_view s) {
    if (s.empty()) return;
    if (!cmdline.empty()) cmdline += ' ';
    cmdline += s;
  };
  if (!launch.kvm && launch.tsc_khz > 0) {
    // Skips the PIT calibration that fails on loaded hosts (docs/guest-image.md).
    append("tsc_early_khz=" + std::to_string(launch.tsc_khz) + " tsc=reliable");
  }

  // Drives: the root drive first, so that it is /dev/vda.
  std::vector<const model::StorageSpec*> drives;
  for (const model::StorageSpec& d : spec.storage) drives.push_back(&d);
  std::stable_partition(drives.begin(), drives.end(),
                        [](const model::StorageSpec* d) { return d->root; });
  for (const model::StorageSpec* d : drives) {
    std::string id = "drive-" + d->id;
    add({"-drive", "id=" + id + ",file=" + EscapeOptValue(d->path) +
                       ",format=raw,if=none,readonly=" + (d->read_only ? "on" : "off")});
    add({"-device", "virtio-blk-device,drive=" + id});
    if (d->root) append(std::string("root=/dev/vda ") + (d->read_only ? "ro" : "rw"));
  }
  for (size_t i = 0; i < spec.network.size(); ++i) {
    const model::NetworkSpec& n = spec.network[i];
    std::string id = "net-" + n.id;
    add({"-netdev", "tap,id=" + id + ",ifname=" + EscapeOptValue(launch.tap_devices[i]) +
                        ",script=no,downscript=no"});
    std::string dev = "virtio-net-device,netdev=" + id;
    if (!n.mac_address.empty()) dev += ",mac=" + n.mac_address;
    add({"-device", dev});
  }
  append(spec.boot.kernel_args);
  add({"-append", cmdline});
  return a;
}

model::VmState StateFromQmpStatus(std::string_view status) {
  if (status == "prelaunch") return model::VmState::kCreated;
  if (status == "running") return model::VmState::kRunning;
  if (status == "shutdown") return model::VmState::kStopped;
  if (status == "guest-panicked" || status == "internal-error") return model::VmState::kFailed;
  // paused, suspended, debug, io-error, watchdog, save-vm, restore-vm, migration states: the vCPUs
  // are stopped.
  return model::VmState::kPaused;
}

}  // namespace metald::backend::qemu

#pragma once
// One usage measurement of one VM, taken every 100 ms while it runs and shipped to billing.
//
// Invariants: counters (cpu_time_ns, net_*, disk_*) are cumulative since the start of the VM's
// current incarnation (one VMM process), so a lost batch is recoverable from the next sample and
// a repeated one is harmless; `sequence` strictly increases per (vm_id, incarnation).
// memory_bytes is a gauge (current resident/assigned memory). Plain value type.

#include <cstdint>
#include <string>

namespace metald::model {

struct UsageSample {
  std::string vm_id;
  std::string customer_id;
  int64_t incarnation = 0;  // The VmRecord incarnation the counters belong to.
  uint64_t sequence = 0;    // Per-VM-incarnation sequence number, starting at 1.
  int64_t timestamp_unix_ns = 0;
  uint64_t cpu_time_ns = 0;   // Cumulative guest vCPU time.
  uint64_t memory_bytes = 0;  // Gauge.
  uint64_t net_rx_bytes = 0;  // Cumulative, all interfaces.
  uint64_t net_tx_bytes = 0;
  uint64_t disk_read_bytes = 0;  // Cumulative, all drives.
  uint64_t disk_write_bytes = 0;

  friend bool operator==(const UsageSample&, const UsageSample&) = default;
};

}  // namespace metald::model

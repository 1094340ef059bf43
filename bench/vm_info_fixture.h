#pragma once
// The message every RPC benchmark server answers GetVmInfo with: a realistic VmInfo (2 vCPU,
// 1 GiB, kernel and initrd, 2 disks, 2 NICs with addresses, 6 metadata entries, timestamps), so
// that ours, the grpc++ anchor and the Beast anchor all serve the same message.

#include "metald/v1/vm.pb.h"

namespace metald::bench {

// The VM id the fixture carries; run_rpc_bench.sh asks for this id.
inline constexpr char kBenchVmId[] = "vm-7f3c9a2e4b1d4e0f8a6b5c3d2e1f0a9b";

// The fixed response: the same fields and sizes in every process (only the order of the
// metadata map entries on the wire may differ, which changes no size).
metald::v1::GetVmInfoResponse MakeBenchVmInfoResponse();

}  // namespace metald::bench

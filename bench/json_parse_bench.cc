// Micro-benchmark of the direct proto3 JSON reader (metald/rpc/json_reader.h) against protobuf's
// util::JsonStringToMessage (ignore_unknown_fields = true, as wire::ParseMessage calls it) on a
// GetVmInfoRequest and a realistic CreateVmRequest. Not a ctest: run it by hand, e.g.
//   json_parse_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// and compare medians (the machine is shared and noisy).
#include <benchmark/benchmark.h>
#include <google/protobuf/util/json_util.h>

#include <string>

#include "metald/rpc/json_reader.h"
#include "metald/v1/vm.pb.h"

namespace {

const char kGetVmInfo[] = R"({"vmId":"vm-01hzzzzzzzzzzzzzzzzzzzzzzz"})";

const char kCreateVm[] =
    R"({"config":{"cpu":{"vcpuCount":2},"memory":{"sizeBytes":"536870912"},)"
    R"("boot":{"kernelPath":"/var/lib/metald/images/vmlinux-6.1",)"
    R"("initrdPath":"/var/lib/metald/images/initrd.img",)"
    R"("kernelArgs":"console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw"},)"
    R"("storage":[{"id":"rootfs","path":"/var/lib/metald/vms/vm-01/rootfs.ext4","isRoot":true},)"
    R"({"id":"data","path":"/var/lib/metald/vms/vm-01/data.img","readOnly":false}],)"
    R"("network":[{"id":"eth0","macAddress":"02:fc:00:00:00:01","ipv4Address":"10.20.0.2/24",)"
    R"("ipv4Gateway":"10.20.0.1","rxRateLimit":{"bandwidthBytesPerSec":"125000000",)"
    R"("opsPerSec":"10000"},"txRateLimit":{"bandwidthBytesPerSec":"125000000"}}],)"
    R"("console":{"enabled":true,"logFile":"/var/log/metald/vm-01.console.log"},)"
    R"("metadata":{"customer":"cus_01hzzzzzzzzzzzzzzzzzzzzz","team":"infra","env":"prod"}},)"
    R"("idempotencyKey":"2f1b6c1e-9d7a-4d0e-8a53-0c1f8e0b7d21"})";

template <typename M>
void BM_Reader(benchmark::State& state, const char* json) {
  for (auto _ : state) {
    M m;
    if (!metald::rpc::json::ReadMessage(json, &m)) {
      state.SkipWithError("ReadMessage declined the input");
      break;
    }
    benchmark::DoNotOptimize(m);
  }
}
void BM_ReaderGetVmInfoRequest(benchmark::State& state) {
  BM_Reader<metald::v1::GetVmInfoRequest>(state, kGetVmInfo);
}
BENCHMARK(BM_ReaderGetVmInfoRequest);
void BM_ReaderCreateVmRequest(benchmark::State& state) {
  BM_Reader<metald::v1::CreateVmRequest>(state, kCreateVm);
}
BENCHMARK(BM_ReaderCreateVmRequest);

template <typename M>
void BM_Protobuf(benchmark::State& state, const char* json) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  for (auto _ : state) {
    M m;
    if (!google::protobuf::util::JsonStringToMessage(json, &m, options).ok()) {
      state.SkipWithError("JsonStringToMessage failed");
      break;
    }
    benchmark::DoNotOptimize(m);
  }
}

void BM_ProtobufGetVmInfoRequest(benchmark::State& state) {
  BM_Protobuf<metald::v1::GetVmInfoRequest>(state, kGetVmInfo);
}
BENCHMARK(BM_ProtobufGetVmInfoRequest);

void BM_ProtobufCreateVmRequest(benchmark::State& state) {
  BM_Protobuf<metald::v1::CreateVmRequest>(state, kCreateVm);
}
BENCHMARK(BM_ProtobufCreateVmRequest);

}  // namespace

BENCHMARK_MAIN();

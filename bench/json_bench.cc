// Micro-benchmark of the proto3 JSON printer (metald/rpc/json.h) against protobuf's
// util::MessageToJsonString on the GetVmInfo fixture every RPC benchmark server answers with.
// Not a ctest: run it by hand, e.g.
//   json_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// and compare medians (the machine is shared and noisy).
#include <benchmark/benchmark.h>
#include <google/protobuf/util/json_util.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench/vm_info_fixture.h"
#include "metald/rpc/json.h"
#include "metald/rpc/wire.h"

namespace {

const metald::v1::GetVmInfoResponse& Fixture() {
  static const auto* const response =
      new metald::v1::GetVmInfoResponse(metald::bench::MakeBenchVmInfoResponse());
  return *response;
}

// The printer writes into a fresh string each time, as wire::SerializeMessage does.
void BM_MetaldPrintMessage(benchmark::State& state) {
  const auto& m = Fixture();
  for (auto _ : state) {
    std::string out;
    if (!metald::rpc::json::PrintMessage(m, &out)) {
      state.SkipWithError("PrintMessage declined the fixture");
      break;
    }
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_MetaldPrintMessage);

// The same, reusing one string (capacity kept): the printer's own cost without allocation.
void BM_MetaldPrintMessageReuse(benchmark::State& state) {
  const auto& m = Fixture();
  std::string out;
  for (auto _ : state) {
    out.clear();
    if (!metald::rpc::json::PrintMessage(m, &out)) {
      state.SkipWithError("PrintMessage declined the fixture");
      break;
    }
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_MetaldPrintMessageReuse);

// What the RPC layer calls: printer plus its fallback plumbing.
void BM_WireSerializeMessage(benchmark::State& state) {
  const auto& m = Fixture();
  for (auto _ : state) {
    auto out = metald::rpc::wire::SerializeMessage(metald::rpc::Codec::kJson, m);
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_WireSerializeMessage);

void BM_ProtobufMessageToJsonString(benchmark::State& state) {
  const auto& m = Fixture();
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = false;
  for (auto _ : state) {
    std::string out;
    if (!google::protobuf::util::MessageToJsonString(m, &out, options).ok()) {
      state.SkipWithError("MessageToJsonString failed");
      break;
    }
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_ProtobufMessageToJsonString);

}  // namespace

int main(int argc, char** argv) {
  // Refuse to measure a printer whose output differs from protobuf's.
  std::string ours;
  std::string theirs;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = false;
  if (!metald::rpc::json::PrintMessage(Fixture(), &ours) ||
      !google::protobuf::util::MessageToJsonString(Fixture(), &theirs, options).ok() ||
      ours != theirs) {
    std::fprintf(stderr, "json_bench: printer output differs from protobuf's on the fixture\n");
    return EXIT_FAILURE;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return EXIT_FAILURE;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return EXIT_SUCCESS;
}

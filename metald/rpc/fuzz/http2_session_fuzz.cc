// libFuzzer target: arbitrary bytes from a peer through the HTTP/2 session (MakeHttp2Session,
// nghttp2 underneath) with a real Engine behind it, read in splits derived from the input
// (fuzz_harness.h). Besides "no crash, no leak, no hang", the session's output must be whole
// HTTP/2 frames starting with the server's SETTINGS. Seeds: corpus/http2/ (client preface,
// SETTINGS, HEADERS, DATA; written by gen_seeds.py).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "metald/base/check.h"
#include "metald/rpc/fuzz/fuzz_harness.h"
#include "metald/rpc/internal/session.h"

namespace {

constexpr uint8_t kFrameSettings = 0x4;
constexpr uint8_t kMaxFrameType = 0x9;  // CONTINUATION; the server sends no extension frames

void CheckFrames(std::string_view out) {
  bool first = true;
  while (!out.empty()) {
    METALD_CHECK(out.size() >= 9);
    const auto* p = reinterpret_cast<const uint8_t*>(out.data());
    size_t length = (size_t{p[0]} << 16) | (size_t{p[1]} << 8) | p[2];
    uint8_t type = p[3];
    METALD_CHECK(type <= kMaxFrameType);
    if (first) METALD_CHECK(type == kFrameSettings);
    first = false;
    METALD_CHECK((p[5] & 0x80) == 0);  // reserved bit of the stream id
    METALD_CHECK(out.size() >= 9 + length);
    out.remove_prefix(9 + length);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  metald::rpc::fuzz::SilenceProtobufLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string out = metald::rpc::fuzz::RunSession(input, &metald::rpc::internal::MakeHttp2Session);
  CheckFrames(out);
  return 0;
}

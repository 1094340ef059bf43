// libFuzzer target: the envelope decoders (wire.h). The incremental EnvelopeDecoder, fed the
// input in the splits fuzz_harness.h derives from it, must agree with DecodeEnvelopes on the
// whole input, and a decoded body must re-encode to exactly the input. Seeds: corpus/envelope/.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "metald/base/check.h"
#include "metald/rpc/fuzz/fuzz_harness.h"
#include "metald/rpc/wire.h"

namespace wire = metald::rpc::wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  constexpr size_t kLimit = 4096;  // small, so that the limit path is reachable

  auto whole = wire::DecodeEnvelopes(input, kLimit);

  wire::EnvelopeDecoder decoder(kLimit);
  std::vector<wire::Envelope> frames;
  metald::base::Status st;
  for (std::string_view read : metald::rpc::fuzz::SplitReads(input)) {
    st = decoder.Feed(read, &frames);
    if (!st.ok()) {
      // Sticky: every later Feed fails the same way.
      std::vector<wire::Envelope> more;
      metald::base::Status again = decoder.Feed("x", &more);
      METALD_CHECK(again.code() == st.code() && more.empty());
      break;
    }
  }
  if (st.ok()) st = decoder.Finish();

  METALD_CHECK(whole.ok() == st.ok());
  if (!whole.ok()) {
    METALD_CHECK(whole.status().code() == st.code());
    return 0;
  }
  METALD_CHECK(!decoder.mid_envelope());
  METALD_CHECK(whole->size() == frames.size());
  std::string reencoded;
  for (size_t i = 0; i < frames.size(); ++i) {
    METALD_CHECK((*whole)[i].flags == frames[i].flags);
    METALD_CHECK((*whole)[i].payload == frames[i].payload);
    METALD_CHECK(frames[i].payload.size() <= kLimit);
    wire::AppendEnvelope(&reencoded, frames[i].flags, frames[i].payload);
  }
  METALD_CHECK(reencoded == input);
  return 0;
}

// libFuzzer target: URL query parsing (wire.h): QueryUnescape, ParseQuery and
// ParseConnectGetQuery, which see the query string of every Connect GET request.
// Seeds: corpus/query/.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "metald/base/check.h"
#include "metald/rpc/wire.h"

namespace wire = metald::rpc::wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  auto unescaped = wire::QueryUnescape(input);
  if (unescaped.ok()) METALD_CHECK(unescaped->size() <= input.size());

  auto pairs = wire::ParseQuery(input);
  if (pairs.ok()) {
    size_t total = 0;
    for (const auto& [k, v] : *pairs) total += k.size() + v.size();
    METALD_CHECK(total <= input.size());
  }

  auto get = wire::ParseConnectGetQuery(input);
  if (get.ok() && get->base64 && get->message) {
    (void)wire::Base64Decode(*get->message, wire::Base64Alphabet::kUrl);
  }
  return 0;
}

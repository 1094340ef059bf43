// libFuzzer target: the Connect error JSON and end-stream JSON decoders (wire.h), which a client
// runs on bytes from any server. Whatever decodes must survive an encode/decode round trip with
// its code, message and details intact. Seeds: corpus/connect_json/.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "metald/base/check.h"
#include "metald/base/status.h"
#include "metald/rpc/wire.h"

namespace {

namespace wire = metald::rpc::wire;
using metald::base::StatusCode;

void CheckSameError(const wire::ConnectError& a, const wire::ConnectError& b) {
  METALD_CHECK(a.code == b.code);
  METALD_CHECK(a.message == b.message);
  METALD_CHECK(a.details.size() == b.details.size());
  for (size_t i = 0; i < a.details.size(); ++i) {
    METALD_CHECK(a.details[i].type == b.details[i].type);
    METALD_CHECK(a.details[i].value == b.details[i].value);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  auto err = wire::DecodeConnectError(input);
  if (err.ok()) {
    if (err->code != StatusCode::kOk) {
      std::string json = wire::EncodeConnectError(err->ToStatus(), err->details);
      auto again = wire::DecodeConnectError(json);
      METALD_CHECK(again.ok());
      CheckSameError(*err, *again);
    }
  } else {
    METALD_CHECK(err.status().code() == StatusCode::kInvalidArgument);
  }

  auto end = wire::DecodeEndStream(input);
  if (end.ok()) {
    metald::base::Status status = end->error ? end->error->ToStatus() : metald::base::OkStatus();
    if (end->error && end->error->code == StatusCode::kOk) return 0;  // not representable
    std::string json = wire::EncodeEndStream(
        status, end->metadata, end->error ? end->error->details : std::vector<wire::ErrorDetail>{});
    auto again = wire::DecodeEndStream(json);
    METALD_CHECK(again.ok());
    METALD_CHECK(again->error.has_value() == end->error.has_value());
    if (end->error) CheckSameError(*end->error, *again->error);
  } else {
    METALD_CHECK(end.status().code() == StatusCode::kInvalidArgument);
  }
  return 0;
}

// libFuzzer target: differential check of the direct JSON reader (json_reader.h) against
// protobuf's util::JsonStringToMessage (ignore_unknown_fields, as wire::ParseMessage uses it).
// The input is JSON text for the test message metald.rpc.jsontest.All, which has every field
// kind. Whenever the reader accepts a text, protobuf must accept it too and produce an equal
// message; wire::ParseMessage must always agree with protobuf. Seeds: corpus/json_read/.

#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "metald/base/check.h"
#include "metald/rpc/json_reader.h"
#include "metald/rpc/testdata/json_print_test.pb.h"
#include "metald/rpc/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool silenced = [] {
    google::protobuf::SetLogHandler(nullptr);
    return true;
  }();
  (void)silenced;
  const std::string text(reinterpret_cast<const char*>(data), size);
  using google::protobuf::util::MessageDifferencer;
  using metald::rpc::jsontest::All;

  All want;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const bool want_ok = google::protobuf::util::JsonStringToMessage(text, &want, options).ok();

  All ours;
  if (metald::rpc::json::ReadMessage(text, &ours)) {
    METALD_CHECK(want_ok);
    METALD_CHECK(MessageDifferencer::Equals(ours, want));
  }
  All wired;
  const bool wired_ok =
      metald::rpc::wire::ParseMessage(metald::rpc::Codec::kJson, text, &wired).ok();
  METALD_CHECK(wired_ok == want_ok);
  if (want_ok) METALD_CHECK(MessageDifferencer::Equals(wired, want));
  return 0;
}

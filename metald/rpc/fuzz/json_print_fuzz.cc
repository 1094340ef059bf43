// libFuzzer target: differential check of the direct proto3 JSON printer (json.h) against
// protobuf's util::MessageToJsonString. The input is binary proto for a few message types with
// many field kinds (descriptor.proto's FileDescriptorProto, Struct, Timestamp, Duration, and the
// generated proto3 jsontest.All of metald/rpc/testdata: implicit presence, oneofs, maps, every
// scalar kind, read by the printer straight from the generated layout); when
// the printer accepts a message its output must be byte-identical to protobuf's, and
// wire::SerializeMessage must always agree with protobuf. Seeds: corpus/json_print/.

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/duration.pb.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/util/json_util.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "metald/base/check.h"
#include "metald/rpc/json.h"
#include "metald/rpc/testdata/json_print_test.pb.h"
#include "metald/rpc/wire.h"

namespace {

void Check(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = false;
  std::string want;
  const bool want_ok = google::protobuf::util::MessageToJsonString(m, &want, options).ok();
  std::string got;
  if (metald::rpc::json::PrintMessage(m, &got)) {
    METALD_CHECK(want_ok);
    METALD_CHECK(got == want);
  }
  auto wired = metald::rpc::wire::SerializeMessage(metald::rpc::Codec::kJson, m);
  METALD_CHECK(wired.ok() == want_ok);
  if (want_ok) METALD_CHECK(*wired == want);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool silenced = [] {
    google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 and printer warnings: noise
    return true;
  }();
  (void)silenced;
  if (size == 0) return 0;
  const int which = data[0] % 5;
  const void* body = data + 1;
  const int len = static_cast<int>(size - 1);
  switch (which) {
    case 0: {
      google::protobuf::FileDescriptorProto m;
      if (m.ParseFromArray(body, len)) Check(m);
      break;
    }
    case 1: {
      google::protobuf::Struct m;
      if (m.ParseFromArray(body, len)) Check(m);
      break;
    }
    case 2: {
      google::protobuf::Timestamp m;
      if (m.ParseFromArray(body, len)) Check(m);
      break;
    }
    case 3: {
      google::protobuf::Duration m;
      if (m.ParseFromArray(body, len)) Check(m);
      break;
    }
    default: {
      metald::rpc::jsontest::All m;
      if (m.ParseFromArray(body, len)) Check(m);
      break;
    }
  }
  return 0;
}

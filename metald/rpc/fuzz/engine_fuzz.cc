// libFuzzer target: Engine::Handle with an arbitrary request head and body, as a transport
// would pass it. Beyond "no crash, no leak", it checks that every exchange gets exactly one
// complete response (RecordingWriter enforces the ResponseWriter contract) and that the response
// is well-formed in the protocol the engine chose.
//
// Input format (text, so seeds are readable and mutations stay meaningful):
//   <METHOD> <path>[?<query>]\n        a leading '!' on METHOD: call RejectTooLarge instead
//   <name>: <value>\n ...              request headers ('\r' before '\n' is dropped)
//   \n
//   <body bytes>
// A header "x-fuzz-cancel" cancels the call's token before Handle (peer already gone).
// Seeds: corpus/engine/.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "metald/base/check.h"
#include "metald/rpc/fuzz/fuzz_harness.h"
#include "metald/rpc/internal/engine.h"
#include "metald/rpc/internal/exchange.h"
#include "metald/rpc/wire.h"

namespace {

using metald::rpc::Metadata;
using metald::rpc::fuzz::RecordingWriter;
namespace wire = metald::rpc::wire;

// Takes the next line off *in (without "\n" or "\r\n"); the rest if there is no newline.
std::string_view NextLine(std::string_view* in) {
  size_t nl = in->find('\n');
  std::string_view line = in->substr(0, nl);
  in->remove_prefix(nl == std::string_view::npos ? in->size() : nl + 1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The grpc-status of a gRPC / gRPC-Web response must be a valid code.
void CheckGrpcStatus(const Metadata& fields) {
  auto status = fields.Get("grpc-status");
  METALD_CHECK(status.has_value());
  METALD_CHECK(wire::ParseGrpcStatus(*status).has_value());
}

void CheckResponse(const RecordingWriter& w) {
  METALD_CHECK(w.done());
  if (w.status() != 200 && w.status() / 100 != 4 && w.status() / 100 != 5) {
    METALD_CHECK(false && "unexpected HTTP status");
  }
  std::string_view ct = w.headers().Get("content-type").value_or("");
  const std::string& body = w.body();
  if (ct.starts_with("application/grpc-web")) {
    METALD_CHECK(w.status() == 200);
    auto frames = wire::DecodeEnvelopes(body, SIZE_MAX);
    METALD_CHECK(frames.ok());
    if (w.headers().Has("grpc-status")) {  // trailers-only
      METALD_CHECK(frames->empty());
      CheckGrpcStatus(w.headers());
      return;
    }
    METALD_CHECK(!frames->empty());
    METALD_CHECK(frames->back().flags == wire::kFlagGrpcWebTrailers);
    for (size_t i = 0; i + 1 < frames->size(); ++i) {
      METALD_CHECK(((*frames)[i].flags & ~wire::kFlagCompressed) == 0);
    }
    auto trailers = wire::DecodeGrpcWebTrailers(frames->back().payload);
    METALD_CHECK(trailers.ok());
    CheckGrpcStatus(*trailers);
  } else if (ct.starts_with("application/grpc")) {
    METALD_CHECK(w.status() == 200);
    auto frames = wire::DecodeEnvelopes(body, SIZE_MAX);
    METALD_CHECK(frames.ok());
    for (const auto& f : *frames) METALD_CHECK((f.flags & ~wire::kFlagCompressed) == 0);
    CheckGrpcStatus(w.headers().Has("grpc-status") ? w.headers() : w.trailers());
  } else if (ct.starts_with("application/connect+")) {
    METALD_CHECK(w.status() == 200);
    auto frames = wire::DecodeEnvelopes(body, SIZE_MAX);
    METALD_CHECK(frames.ok());
    METALD_CHECK(!frames->empty());
    const wire::Envelope& end = frames->back();
    METALD_CHECK(end.flags & wire::kFlagEndStream);
    if (!(end.flags & wire::kFlagCompressed)) {
      METALD_CHECK(wire::DecodeEndStream(end.payload).ok());
    }
  } else if (ct == "application/json" && w.status() != 200) {
    // Connect unary error.
    auto err = wire::DecodeConnectError(body);
    METALD_CHECK(err.ok());
    METALD_CHECK(w.status() == wire::HttpStatusForCode(err->code));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  metald::rpc::fuzz::SilenceProtobufLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  metald::rpc::internal::RequestHead head;
  std::string_view request_line = NextLine(&in);
  size_t sp = request_line.find(' ');
  std::string_view method = request_line.substr(0, sp);
  std::string_view target =
      sp == std::string_view::npos ? std::string_view() : request_line.substr(sp + 1);
  const bool too_large = method.starts_with('!');
  if (too_large) method.remove_prefix(1);
  head.method = std::string(method);
  size_t q = target.find('?');
  head.path = std::string(target.substr(0, q));
  if (q != std::string_view::npos) head.query = std::string(target.substr(q + 1));
  bool cancel_first = false;
  for (int n = 0; n < 64 && !in.empty(); ++n) {
    std::string_view line = NextLine(&in);
    if (line.empty()) break;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = Trim(line.substr(0, colon));
    if (metald::rpc::AsciiIEquals(name, "x-fuzz-cancel")) cancel_first = true;
    head.headers.Add(name, Trim(line.substr(colon + 1)));
  }
  head.peer = "127.0.0.1:5000";

  metald::rpc::internal::Engine* engine = metald::rpc::fuzz::FuzzEngine();
  auto writer = std::make_shared<RecordingWriter>();
  auto cancel = std::make_shared<metald::rpc::CancelToken>();
  if (cancel_first) cancel->Cancel(metald::base::CancelledError("Fuzz: peer gone"));
  if (too_large) {
    engine->RejectTooLarge(std::move(head), writer);
  } else {
    engine->Handle(std::move(head), std::string(in), writer, cancel);
  }
  // Nonblocking methods answered inline; plain routes answer on the pool.
  if (!writer->done()) metald::rpc::fuzz::DrainEngine(engine);
  CheckResponse(*writer);
  return 0;
}

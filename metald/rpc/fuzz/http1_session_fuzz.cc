// libFuzzer target: arbitrary bytes from a peer through the HTTP/1.1 session (MakeHttp1Session)
// with a real Engine behind it, read in splits derived from the input (fuzz_harness.h). Besides
// "no crash, no leak, no hang", the session's output must parse as a sequence of HTTP/1.1
// responses (checked when no HEAD request may have been answered: a HEAD response's body is
// absent, which a parser cannot know). Seeds: corpus/http1/ (raw request bytes).

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "metald/base/check.h"
#include "metald/rpc/fuzz/fuzz_harness.h"
#include "metald/rpc/internal/session.h"

namespace {

namespace http = boost::beast::http;

// Aborts unless `out` is a sequence of well-formed responses; the last one may be cut short only
// by a close-delimited body, which ends with the connection.
void CheckResponses(std::string_view out) {
  while (!out.empty()) {
    http::response_parser<http::string_body> parser;
    parser.body_limit(64u << 20);
    parser.header_limit(1u << 20);
    parser.eager(true);
    boost::beast::error_code ec;
    size_t n = parser.put(boost::asio::buffer(out.data(), out.size()), ec);
    out.remove_prefix(n);
    if (ec == http::error::need_more && parser.is_header_done() && !parser.chunked() &&
        !parser.content_length()) {
      ec = {};
      parser.put_eof(ec);
    }
    if (ec || !parser.is_done()) {
      std::fprintf(stderr, "http1 fuzz: malformed response output (%s) at: %.*s\n",
                   ec ? ec.message().c_str() : "incomplete",
                   static_cast<int>(std::min<size_t>(out.size(), 200)), out.data());
      METALD_CHECK(false && "HTTP/1.1 session wrote a malformed response");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  metald::rpc::fuzz::SilenceProtobufLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string out = metald::rpc::fuzz::RunSession(input, &metald::rpc::internal::MakeHttp1Session);
  if (input.find("HEAD") == std::string_view::npos) CheckResponses(out);
  return 0;
}

// beast_bench_server: the anchor for the Connect JSON benchmark. A bare Boost.Beast HTTP/1.1
// server (async, keep-alive, one strand-free session per connection) that answers every request
// with the exact bytes rpc_bench_server returns for a Connect JSON GetVmInfo: the fixture's
// GetVmInfoResponse printed by the RPC layer's own JSON serializer (wire::SerializeMessage), as
// "200 OK, content-type: application/json". It does no routing, header checks or decoding, so
// it bounds what an HTTP/1.1 server on Beast can do for this response.
//
//   beast_bench_server [--listen 127.0.0.1:0] [--io-threads 1]
//
// Prints "json_bytes N" and "listening ADDR" on stdout once serving; exits 0 on SIGTERM/SIGINT.

#include <signal.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/vm_info_fixture.h"
#include "metald/rpc/wire.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// One connection: read a request, write the canned response, repeat while keep-alive holds.
// Lives as long as an async operation holds its shared_ptr.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const std::string* body) : stream_(std::move(socket)), body_(body) {}

  void Read() {
    request_ = {};
    http::async_read(stream_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (!ec) self->Write();
                     });
  }

 private:
  void Write() {
    response_ = {};
    response_.result(http::status::ok);
    response_.version(request_.version());
    // The same header fields rpc_bench_server sends with a Connect unary JSON response.
    response_.set(http::field::content_type, "application/json");
    response_.set(http::field::accept_encoding, "gzip");
    response_.keep_alive(request_.keep_alive());
    response_.body() = *body_;
    response_.prepare_payload();
    http::async_write(stream_, response_,
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        if (ec) return;
                        if (!self->response_.keep_alive()) {
                          beast::error_code ignored;
                          self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          return;
                        }
                        self->Read();
                      });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  const std::string* body_;  // owned by main, outlives every session
};

void Accept(tcp::acceptor& acceptor, const std::string* body) {
  acceptor.async_accept([&acceptor, body](beast::error_code ec, tcp::socket socket) {
    if (ec) return;
    socket.set_option(tcp::no_delay(true));
    std::make_shared<Session>(std::move(socket), body)->Read();
    Accept(acceptor, body);
  });
}

int Usage(const char* argv0, const std::string& problem) {
  std::fprintf(stderr, "%s\nusage: %s [--listen HOST:PORT] [--io-threads N]\n", problem.c_str(),
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:0";
  int io_threads = 1;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) return Usage(argv[0], "Missing value for " + flag);
    std::string value = argv[++i];
    if (flag == "--listen") {
      listen = value;
    } else if (flag == "--io-threads") {
      io_threads = std::stoi(value);
    } else {
      return Usage(argv[0], "Unknown flag " + flag);
    }
  }
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || io_threads < 1) return Usage(argv[0], "Bad flags");

  auto json = metald::rpc::wire::SerializeMessage(metald::rpc::Codec::kJson,
                                                  metald::bench::MakeBenchVmInfoResponse());
  if (!json.ok()) {
    std::fprintf(stderr, "beast_bench_server: %s\n", json.status().ToString().c_str());
    return 1;
  }
  const std::string body = *json;

  try {
    asio::io_context io(io_threads);
    tcp::endpoint endpoint(asio::ip::make_address(listen.substr(0, colon)),
                           static_cast<unsigned short>(std::stoi(listen.substr(colon + 1))));
    tcp::acceptor acceptor(io, endpoint);
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&io](beast::error_code, int) { io.stop(); });
    Accept(acceptor, &body);
    std::printf("json_bytes %zu\nlistening %s:%u\n", body.size(),
                acceptor.local_endpoint().address().to_string().c_str(),
                acceptor.local_endpoint().port());
    std::fflush(stdout);
    std::vector<std::thread> threads;
    for (int i = 1; i < io_threads; ++i) threads.emplace_back([&io] { io.run(); });
    io.run();
    for (auto& t : threads) t.join();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "beast_bench_server: %s\n", e.what());
    return 1;
  }
  return 0;
}

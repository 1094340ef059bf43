// HTTP/1.1 session: Beast's request parser fed through put(), our own response serializer.
//
// Requests are answered in the order they arrived (pipelining): every request gets an
// Http1Writer, queued in arrival order; only the queue's head may emit bytes, later writers
// buffer until they reach the head. The writer decides the framing when its head is first
// collected: Content-Length when the whole response is already there, chunked otherwise (each
// SendData becomes one chunk so that server-streamed messages reach the client promptly), and
// for HTTP/1.0 clients, which do not know chunked, Content-Length after the end or a
// close-delimited body once a full pending window is waiting.
//
// Threading: the session runs on the connection's strand. Writers are called from handler
// threads and from the strand; their state and the session's link to the connection are guarded
// by Link::mu. Writers may outlive the session (the engine holds them), so they reach the
// connection only through the Link, which the session cuts in OnClose.

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "metald/rpc/internal/session.h"

namespace metald::rpc::internal {
namespace {

namespace http = boost::beast::http;

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
// Most requests read ahead of their responses; beyond this the session stops reading.
constexpr size_t kMaxPipelined = 16;

// What a session shares with its writers. The writers outlive neither the Link nor, while
// `host` is set, the connection: the session clears `host` (under mu) before it goes away.
struct Link {
  std::mutex mu;
  std::condition_variable drained;  // signalled when bytes are collected or the link closes
  SessionHost* host = nullptr;      // guarded by mu; null once closed
  size_t max_pending = 0;           // constant
  std::chrono::milliseconds write_stall_timeout{0};  // constant
};

bool IsTokenChar(char c) {
  return c > 0x20 && c < 0x7f && c != ':' && c != '(' && c != ')' && c != ',' && c != ';' &&
         c != '"' && c != '/' && c != '[' && c != ']' && c != '?' && c != '=' && c != '{' &&
         c != '}' && c != '\\' && c != '<' && c != '>' && c != '@';
}

// A field the handler gave may go on the wire: a token name and a value without CR, LF or NUL
// (which would let a value smuggle in its own header lines).
bool SafeField(std::string_view name, std::string_view value) {
  if (name.empty()) return false;
  for (char c : name) {
    if (!IsTokenChar(c)) return false;
  }
  for (char c : value) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

// Framing fields are ours to write; the handler's are dropped.
bool IsFramingField(std::string_view name) {
  return AsciiIEquals(name, "content-length") || AsciiIEquals(name, "transfer-encoding") ||
         AsciiIEquals(name, "connection") || AsciiIEquals(name, "keep-alive") ||
         AsciiIEquals(name, "upgrade") || AsciiIEquals(name, "trailer") ||
         AsciiIEquals(name, "proxy-connection");
}

// "content-type" -> "Content-Type": HTTP/1.1 names are case-insensitive, but some clients and
// most people reading a trace expect this spelling.
void AppendCanonicalName(std::string* out, std::string_view name) {
  bool upper = true;
  for (char c : name) {
    if (upper && c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    out->push_back(c);
    upper = c == '-';
  }
}

void AppendField(std::string* out, std::string_view name, std::string_view value) {
  AppendCanonicalName(out, name);
  out->append(": ");
  out->append(value);
  out->append("\r\n");
}

std::string ReasonPhrase(int status) {
  std::string_view reason = http::obsolete_reason(static_cast<http::status>(status));
  if (reason == "<unknown-status>") return "Unknown";
  return std::string(reason);
}

// How a response body is delimited; fixed when the head is serialized.
enum class Framing { kUndecided, kLength, kChunked, kCloseDelimited, kNoBody };

// Facts about the request that shape its response. Constant.
struct RequestTraits {
  bool head = false;       // HEAD: the response has no body
  bool http10 = false;     // HTTP/1.0: no chunked encoding
  bool keep_alive = true;  // the client lets the connection stay open after this exchange
};

// The ResponseWriter of one HTTP/1.1 exchange.
//
// Thread-safety: every member is guarded by link_->mu. The send methods may run on any thread;
// Collect and RequestContinue only on the connection's strand.
class Http1Writer final : public ResponseWriter {
 public:
  Http1Writer(std::shared_ptr<Link> link, RequestTraits traits)
      : link_(std::move(link)), traits_(traits) {}

  void SendHeaders(int status, Metadata headers, bool end_stream) override {
    std::lock_guard<std::mutex> lock(link_->mu);
    if (link_->host == nullptr || headers_given_) return;
    headers_given_ = true;
    status_ = status;
    headers_ = std::move(headers);
    discard_body_ = traits_.head || status < 200 || status == 204 || status == 304;
    // Without end_stream the head waits for the first data or Finish: by then the whole (unary)
    // response is often there and can go out with a Content-Length instead of chunked.
    if (end_stream) {
      ended_ = true;
      link_->host->WakeWriter();
    }
  }

  bool SendData(std::string bytes) override {
    std::unique_lock<std::mutex> lock(link_->mu);
    if (link_->host == nullptr || ended_ || !headers_given_) return false;
    if (bytes.empty()) return true;
    body_bytes_ += bytes.size();
    if (!discard_body_) body_.append(bytes);
    link_->host->WakeWriter();
    if (!link_->host->OnIoThread()) {
      bool drained = link_->drained.wait_for(lock, link_->write_stall_timeout, [&] {
        return link_->host == nullptr || body_.size() <= link_->max_pending;
      });
      if (!drained) return false;  // The peer stopped reading; give the handler thread back.
    }
    return link_->host != nullptr;
  }

  void Finish(Metadata trailers) override {
    std::lock_guard<std::mutex> lock(link_->mu);
    if (link_->host == nullptr || ended_) return;
    if (!headers_given_) {
      // Contract breach by the caller; answer something well-formed rather than nothing.
      headers_given_ = true;
      status_ = 500;
    }
    ended_ = true;
    trailers_ = std::move(trailers);
    link_->host->WakeWriter();
  }

  // Queues head, body and end together under the lock, so the first Collect sees the whole
  // response and frames it with Content-Length (chunked only to carry non-empty trailers).
  void SendWhole(int status, Metadata headers, std::string body, Metadata trailers) override {
    std::unique_lock<std::mutex> lock(link_->mu);
    if (link_->host == nullptr || headers_given_) return;
    headers_given_ = true;
    status_ = status;
    headers_ = std::move(headers);
    discard_body_ = traits_.head || status < 200 || status == 204 || status == 304;
    body_bytes_ += body.size();
    if (!discard_body_) {
      if (body_.empty()) {
        body_ = std::move(body);
      } else {
        body_.append(body);
      }
    }
    trailers_ = std::move(trailers);
    ended_ = true;
    link_->host->WakeWriter();
    // Same backpressure as SendData: a handler thread waits while a large body is pending.
    if (!link_->host->OnIoThread()) {
      link_->drained.wait_for(lock, link_->write_stall_timeout, [&] {
        return link_->host == nullptr || body_.size() <= link_->max_pending;
      });
    }
  }

  // Sends "100 Continue" before the response unless the response is already there.
  // REQUIRES: on the strand.
  void RequestContinue() {
    std::lock_guard<std::mutex> lock(link_->mu);
    continue_wanted_ = true;
  }

  // Appends the bytes ready to go. `last`: no other response follows on this connection, so the
  // head says "Connection: close". Returns true once the response was written completely.
  // REQUIRES: on the strand, and this writer is at the head of the session's queue.
  bool Collect(std::string* out, bool last) {
    std::lock_guard<std::mutex> lock(link_->mu);
    if (complete_) return true;
    if (framing_ == Framing::kUndecided) {
      if (continue_wanted_ && !headers_given_) out->append(kContinue);
      continue_wanted_ = false;
      if (!headers_given_) return false;
      // HEAD: wait for the end so that Content-Length tells the size GET would send.
      if (traits_.head && !ended_) return false;
      // HTTP/1.0 has no chunks: wait for the end (Content-Length, the connection stays) unless
      // the body fills the pending window, then fall back to a close-delimited body.
      if (traits_.http10 && !ended_ && body_.size() < link_->max_pending) return false;
      WriteHead(out, last);
    }
    if (!body_.empty()) {
      if (framing_ == Framing::kChunked) {
        char size[32];
        std::snprintf(size, sizeof(size), "%zx\r\n", body_.size());
        out->append(size);
        out->append(body_);
        out->append("\r\n");
      } else {
        out->append(body_);
      }
      body_.clear();
      link_->drained.notify_all();
    }
    if (ended_) {
      if (framing_ == Framing::kChunked) {
        out->append("0\r\n");
        for (const auto& [name, value] : trailers_) {
          if (SafeField(name, value) && !IsFramingField(name)) AppendField(out, name, value);
        }
        out->append("\r\n");
      }
      complete_ = true;
    }
    return complete_;
  }

  // True when the connection must close after this response (decided with the head).
  // REQUIRES: on the strand, after Collect returned true.
  bool closes_connection() const {
    std::lock_guard<std::mutex> lock(link_->mu);
    return closes_connection_;
  }

  const RequestTraits& traits() const { return traits_; }

 private:
  // REQUIRES: link_->mu held; headers_given_.
  void WriteHead(std::string* out, bool last) {
    bool handler_close = false;
    for (const auto& [name, value] : headers_) {
      if (AsciiIEquals(name, "connection") &&
          AsciiLower(value).find("close") != std::string::npos) {
        handler_close = true;
      }
    }
    std::optional<std::string> content_length;
    if (discard_body_) {
      framing_ = Framing::kNoBody;
      if (traits_.head) {
        // The length GET would send: what the handler passed (and we dropped), else the
        // handler's own Content-Length, else unknown (allowed for HEAD).
        auto given = headers_.Get("content-length");
        if (body_bytes_ > 0) {
          content_length = std::to_string(body_bytes_);
        } else if (given && !given->empty() &&
                   given->find_first_not_of("0123456789") == std::string_view::npos) {
          content_length = std::string(*given);
        }
      }
    } else if (ended_ && (trailers_.empty() || traits_.http10)) {
      framing_ = Framing::kLength;
      content_length = std::to_string(body_.size());
    } else if (traits_.http10) {
      framing_ = Framing::kCloseDelimited;
    } else {
      framing_ = Framing::kChunked;
    }
    closes_connection_ =
        last || handler_close || !traits_.keep_alive || framing_ == Framing::kCloseDelimited;

    if (status_ == 200) {
      out->append("HTTP/1.1 200 OK\r\n");
    } else {
      out->append("HTTP/1.1 ");
      out->append(std::to_string(status_));
      out->push_back(' ');
      out->append(ReasonPhrase(status_));
      out->append("\r\n");
    }
    for (const auto& [name, value] : headers_) {
      if (SafeField(name, value) && !IsFramingField(name)) AppendField(out, name, value);
    }
    if (content_length && status_ != 204 && status_ != 304 && status_ >= 200) {
      AppendField(out, "content-length", *content_length);
    }
    if (framing_ == Framing::kChunked) AppendField(out, "transfer-encoding", "chunked");
    if (closes_connection_) {
      AppendField(out, "connection", "close");
    } else if (traits_.http10) {
      AppendField(out, "connection", "keep-alive");
    }
    out->append("\r\n");
  }

  const std::shared_ptr<Link> link_;
  const RequestTraits traits_;

  // Guarded by link_->mu.
  bool headers_given_ = false;
  bool ended_ = false;  // Finish, or SendHeaders with end_stream
  bool discard_body_ = false;
  bool continue_wanted_ = false;
  bool complete_ = false;
  bool closes_connection_ = false;
  int status_ = 0;
  Metadata headers_;
  Metadata trailers_;
  std::string body_;       // given, not yet collected
  size_t body_bytes_ = 0;  // given in total (HEAD: the length GET would have)
  Framing framing_ = Framing::kUndecided;
};

// Invariants: queue_ holds one entry per request whose head was read and whose response was not
// yet collected completely, in arrival order; when receiving_ is set, queue_.back() belongs to
// the request being received and parser_ is set.
class Http1Session final : public Session {
 public:
  Http1Session(SessionHost* host, Engine* engine, SessionLimits limits)
      : engine_(engine), limits_(limits), link_(std::make_shared<Link>()) {
    link_->host = host;
    link_->max_pending = limits.max_pending_bytes_per_exchange;
    link_->write_stall_timeout = limits.write_stall_timeout;
  }

  ~Http1Session() override { OnClose(); }

  base::Status OnReadable(std::string_view bytes) override {
    // After the last request (Connection: close, an error, a rejected body) input is ignored.
    if (closed_ || !accepting_) return base::OkStatus();
    inbuf_.append(bytes);
    if (!bytes.empty()) starved_ = false;
    return Parse();
  }

  void CollectOutput(std::string* out) override {
    if (closed_) return;
    for (;;) {
      while (!queue_.empty() && !must_close_) {
        Pending& head = queue_.front();
        bool last = !accepting_ && queue_.size() == 1;
        if (!head.writer->Collect(out, last)) break;
        if (head.writer->closes_connection()) {
          must_close_ = true;
          accepting_ = false;
        }
        queue_.pop_front();
      }
      // Requests held back by the pipelining cap can go now.
      if (must_close_ || !accepting_ || inbuf_.empty() || receiving_ ||
          queue_.size() >= kMaxPipelined) {
        return;
      }
      size_t before = queue_.size();
      (void)Parse();  // a failure queues its own error response
      if (queue_.size() == before) return;
    }
  }

  bool ShouldClose() const override {
    return closed_ || must_close_ || (!accepting_ && queue_.empty());
  }

  bool Busy() const override { return !queue_.empty() || ReadingRequest(); }

  TimerKind timer_kind() const override {
    if (ReadingRequest()) return TimerKind::kRead;
    return queue_.empty() ? TimerKind::kIdle : TimerKind::kNone;
  }

  bool WantsRead() const override { return !(accepting_ && HeldBack()); }

  void OnClose() override {
    if (closed_) return;
    closed_ = true;
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      link_->host = nullptr;
    }
    link_->drained.notify_all();
    for (Pending& p : queue_) p.cancel->Cancel(base::CancelledError("Connection closed"));
    queue_.clear();
    parser_.reset();
    receiving_.reset();
    inbuf_.clear();
  }

  void BeginShutdown() override {
    shutdown_ = true;
    // A request already partly here is still served; none after it.
    if (!ReadingRequest()) {
      accepting_ = false;
      inbuf_.clear();
    }
  }

 private:
  struct Pending {
    std::shared_ptr<Http1Writer> writer;
    std::shared_ptr<CancelToken> cancel;
  };

  // Complete requests wait in inbuf_ because too many responses are outstanding.
  bool HeldBack() const { return !receiving_ && queue_.size() >= kMaxPipelined; }

  bool ReadingRequest() const {
    return accepting_ && (parser_.has_value() || !inbuf_.empty()) && !HeldBack();
  }

  base::Status Parse() {
    // Beast's put() contract: after need_more, call again only with more bytes (its chunk-header
    // parser asserts progress). CollectOutput resumes parsing without new bytes, so it must not
    // re-present a buffer that already came back need_more.
    while (accepting_ && !starved_ && !inbuf_.empty() && !HeldBack()) {
      if (!parser_) {
        parser_.emplace();
        parser_->header_limit(
            static_cast<std::uint32_t>(std::min<size_t>(limits_.max_header_bytes, UINT32_MAX)));
        parser_->body_limit(limits_.max_message_bytes);
      }
      boost::beast::error_code ec;
      size_t n = parser_->put(boost::asio::buffer(inbuf_), ec);
      inbuf_.erase(0, n);
      bool need_more = ec == http::error::need_more;
      if (need_more) {
        ec = {};
        starved_ = true;
      }
      if (ec == http::error::body_limit) {
        RejectTooLarge();
        return base::OkStatus();
      }
      if (ec == http::error::header_limit) {
        return Fail(431, "Request header fields too large");
      }
      if (ec) return Fail(400, "Malformed HTTP request: " + ec.message());
      if (parser_->is_header_done() && !receiving_) {
        RETURN_IF_ERROR(OnHeader());
      }
      if (parser_->is_done()) {
        OnRequestComplete();
        continue;
      }
      if (need_more || n == 0) break;
    }
    return base::OkStatus();
  }

  // `field_count`: how many fields msg has (a capacity hint).
  RequestHead MakeHead(const http::request<http::string_body>& msg, size_t field_count) const {
    RequestHead head;
    head.method = std::string(msg.method_string());
    std::string_view target = msg.target();
    // Absolute form ("http://host/path") is allowed in requests; keep the path.
    if (target.starts_with("http://") || target.starts_with("https://")) {
      size_t slash = target.find('/', target.find("//") + 2);
      target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
    size_t q = target.find('?');
    head.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) head.query = std::string(target.substr(q + 1));
    head.headers.Reserve(field_count);
    for (const auto& field : msg) {
      std::string_view name = field.name_string();
      // Hop-by-hop fields describe this connection, not the request.
      if (AsciiIEquals(name, "connection") || AsciiIEquals(name, "keep-alive") ||
          AsciiIEquals(name, "transfer-encoding") || AsciiIEquals(name, "expect") ||
          AsciiIEquals(name, "upgrade") || AsciiIEquals(name, "proxy-connection")) {
        continue;
      }
      head.headers.Add(name, field.value());
    }
    head.version = HttpVersion::kHttp1;
    head.peer = link_host()->peer();
    head.tls = link_host()->tls();
    return head;
  }

  // The session's own host pointer; valid until OnClose, and Parse runs only before it.
  SessionHost* link_host() const { return link_->host; }

  RequestTraits TraitsOf(const http::request<http::string_body>& msg) const {
    RequestTraits t;
    t.head = msg.method() == http::verb::head;
    t.http10 = msg.version() < 11;
    t.keep_alive = msg.keep_alive();
    return t;
  }

  base::Status OnHeader() {
    const auto& msg = parser_->get();
    size_t count = 0;
    for (auto it = msg.begin(); it != msg.end(); ++it) ++count;
    if (count > limits_.max_header_count) {
      return Fail(431, "Too many request header fields");
    }
    auto writer = std::make_shared<Http1Writer>(link_, TraitsOf(msg));
    queue_.push_back({writer, std::make_shared<CancelToken>()});
    receiving_ = MakeHead(msg, count);
    auto expect = msg.find(http::field::expect);
    if (expect != msg.end() && AsciiIEquals(expect->value(), "100-continue") &&
        msg.version() >= 11 && !parser_->is_done()) {
      writer->RequestContinue();
    }
    return base::OkStatus();
  }

  void OnRequestComplete() {
    http::request<http::string_body> msg = parser_->release();
    parser_.reset();
    RequestHead head = std::move(*receiving_);
    receiving_.reset();
    Pending p = queue_.back();
    if (!p.writer->traits().keep_alive || shutdown_) {
      accepting_ = false;
      inbuf_.clear();
    }
    engine_->Handle(std::move(head), std::move(msg.body()), p.writer, p.cancel);
  }

  // The body is over max_message_bytes: the engine answers resource_exhausted in the request's
  // protocol, and the connection closes after that (the rest of the body is never read).
  void RejectTooLarge() {
    RequestHead head;
    std::shared_ptr<Http1Writer> writer;
    if (receiving_) {
      head = std::move(*receiving_);
      writer = queue_.back().writer;
    } else {
      // Beast stops at a too-large Content-Length after reading every field: the head is whole.
      const auto& msg = parser_->get();
      head = MakeHead(msg, static_cast<size_t>(std::distance(msg.begin(), msg.end())));
      RequestTraits traits = TraitsOf(msg);
      traits.keep_alive = false;
      writer = std::make_shared<Http1Writer>(link_, traits);
      queue_.push_back({writer, std::make_shared<CancelToken>()});
    }
    StopReading();
    engine_->RejectTooLarge(std::move(head), writer);
  }

  // Answers a request the session itself refuses, then closes. Returns the matching error.
  base::Status Fail(int status, std::string message) {
    std::shared_ptr<Http1Writer> writer;
    if (receiving_) {
      writer = queue_.back().writer;
    } else {
      writer = std::make_shared<Http1Writer>(link_, RequestTraits{.keep_alive = false});
      queue_.push_back({writer, std::make_shared<CancelToken>()});
    }
    StopReading();
    writer->SendHeaders(status, Metadata{{"content-type", "text/plain; charset=utf-8"}}, false);
    (void)writer->SendData(message + "\n");
    writer->Finish(Metadata());
    return status == 431 ? base::ResourceExhaustedError(std::move(message))
                         : base::InvalidArgumentError(std::move(message));
  }

  void StopReading() {
    accepting_ = false;
    parser_.reset();
    receiving_.reset();
    inbuf_.clear();
  }

  Engine* const engine_;
  const SessionLimits limits_;
  const std::shared_ptr<Link> link_;

  // Strand only.
  std::string inbuf_;  // received, not yet parsed
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<RequestHead> receiving_;  // the request whose body is being read
  std::deque<Pending> queue_;
  bool accepting_ = true;  // more requests may follow
  bool starved_ = false;   // the parser said need_more and no byte arrived since
  bool shutdown_ = false;
  bool must_close_ = false;  // a response said Connection: close or has no length
  bool closed_ = false;
};

}  // namespace

std::unique_ptr<Session> MakeHttp1Session(SessionHost* host, Engine* engine, SessionLimits limits) {
  return std::make_unique<Http1Session>(host, engine, limits);
}

}  // namespace metald::rpc::internal

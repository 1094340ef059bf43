// HTTP/2 server session on libnghttp2 (1.52: the ssize_t API, no mem_recv2).
//
// Threading model. Every nghttp2 call happens on the connection's strand (the Session methods).
// Handler threads reach a stream only through its Http2Writer, which touches nothing but the
// session's mutex-guarded writer state (WriterShared::mu) and then asks the host to call
// CollectOutput. CollectOutput, on the strand, turns that state into nghttp2 calls
// (submit_response, resume_data) and drains nghttp2_session_mem_send; the DATA provider copies
// out of the writer's buffer under the same mutex and submits trailers when the buffer is done.
//
// Engine calls (Handle, RejectTooLarge) and CancelToken::Cancel are never made from inside an
// nghttp2 callback: callbacks queue them in actions_, which run once nghttp2 has returned. That
// keeps nghttp2 free of reentrancy when a nonblocking handler answers inline on the strand.

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "metald/base/check.h"
#include "metald/base/status.h"
#include "metald/rpc/call.h"
#include "metald/rpc/internal/engine.h"
#include "metald/rpc/internal/exchange.h"
#include "metald/rpc/internal/session.h"
#include "metald/rpc/metadata.h"

namespace metald::rpc::internal {
namespace {

// Per-stream receive window. Large enough that a unary request of a few MiB is not throttled
// by round trips; nghttp2 sends WINDOW_UPDATEs as the application consumes (automatic mode).
constexpr int32_t kStreamWindow = 1 << 20;
// Connection receive window, shared by every stream.
constexpr int32_t kConnectionWindow = 16 << 20;
// The raw body limit allows one gRPC/Connect envelope prefix on top of max_message_bytes, so a
// message of exactly the limit is judged by the engine (which checks the decoded size).
constexpr size_t kEnvelopePrefixBytes = 5;

// Connection-specific fields that HTTP/2 forbids (RFC 9113 §8.2.2); dropped from responses.
bool IsConnectionSpecific(std::string_view name) {
  return name == "connection" || name == "keep-alive" || name == "proxy-connection" ||
         name == "transfer-encoding" || name == "upgrade";
}

nghttp2_nv MakeNv(const std::string& name, const std::string& value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NONE};
}

// State shared between the session (strand) and the ResponseWriters (any thread). Outlives the
// session: a handler may hold its writer after the connection is gone.
struct WriterShared {
  WriterShared(SessionHost* h, size_t max_pending, std::chrono::milliseconds write_stall_timeout)
      : host(h), max_pending(max_pending), write_stall_timeout(write_stall_timeout) {}

  // Asks the connection for a CollectOutput. No-op once the session closed.
  // REQUIRES: mu not held (the host may take its own locks).
  void Wake() {
    std::lock_guard lock(host_mu);
    if (host != nullptr) host->WakeWriter();
  }
  // Whether the caller runs on the connection's strand; false once the session closed.
  bool OnIoThread() {
    std::lock_guard lock(host_mu);
    return host != nullptr && host->OnIoThread();
  }

  std::mutex mu;
  // Signalled (under mu) when a writer's pending bytes shrink, its stream goes away, its call
  // is cancelled, or the session closes.
  std::condition_variable cv;
  // Streams whose writer changed since the last CollectOutput. Guarded by mu.
  std::vector<int32_t> dirty;

  // Never held together with mu.
  std::mutex host_mu;
  SessionHost* host;  // guarded by host_mu; null after OnClose / destruction

  const size_t max_pending;
  const std::chrono::milliseconds write_stall_timeout;
};

// The response half of one stream. Thread-safe: every field below is guarded by shared_->mu.
// Invariants: headers_submitted implies headers_queued; complete implies nothing more is sent.
class Http2Writer final : public ResponseWriter {
 public:
  Http2Writer(std::shared_ptr<WriterShared> shared, int32_t stream_id,
              std::shared_ptr<CancelToken> cancel)
      : shared_(std::move(shared)), stream_id_(stream_id), cancel_(std::move(cancel)) {
    // A cancelled call (deadline, peer reset) must release a handler blocked in SendData. The
    // callback captures only the shared state, which outlives this writer.
    std::weak_ptr<WriterShared> weak = shared_;
    cancel_handle_ = cancel_->OnCancel([weak] {
      if (auto s = weak.lock()) {
        std::lock_guard lock(s->mu);
        s->cv.notify_all();
      }
    });
  }
  ~Http2Writer() override { cancel_->RemoveCallback(cancel_handle_); }

  void SendHeaders(int status, Metadata headers, bool end_stream) override {
    {
      std::lock_guard lock(shared_->mu);
      if (gone || headers_queued) return;
      headers_queued = true;
      status_ = status;
      headers_ = std::move(headers);
      headers_end_stream = end_stream;
      if (end_stream) finished = true;
      MarkDirtyLocked();
    }
    shared_->Wake();
  }

  bool SendData(std::string bytes) override {
    {
      std::lock_guard lock(shared_->mu);
      if (gone || finished) return false;
      if (bytes.empty()) return true;
      if (PendingLocked() == 0) {
        buffer = std::move(bytes);
        offset = 0;
      } else {
        buffer.append(bytes);
      }
      MarkDirtyLocked();
    }
    shared_->Wake();
    // Backpressure, only for handler threads: the strand must never wait for itself.
    if (shared_->OnIoThread()) return true;
    std::unique_lock lock(shared_->mu);
    // Bounded: a peer that never opens its flow-control window gets the write failed after
    // write_stall_timeout rather than holding this handler thread for ever.
    shared_->cv.wait_for(lock, shared_->write_stall_timeout, [&] {
      return gone || PendingLocked() <= shared_->max_pending || cancel_->cancelled();
    });
    return !gone && PendingLocked() <= shared_->max_pending;
  }

  void Finish(Metadata trailers) override {
    {
      std::lock_guard lock(shared_->mu);
      if (gone || finished) return;
      if (!headers_queued) {
        // Contract breach by the caller; answer something well-formed rather than hang.
        headers_queued = true;
        status_ = 500;
      }
      finished = true;
      trailers_ = std::move(trailers);
      MarkDirtyLocked();
    }
    shared_->Wake();
  }

  int32_t stream_id() const { return stream_id_; }

  // ---- Used by the session on the strand, with shared_->mu held. ----
  size_t PendingLocked() const { return buffer.size() - offset; }
  void MarkDirtyLocked() {
    if (dirty) return;
    dirty = true;
    shared_->dirty.push_back(stream_id_);
  }
  // Copies up to `length` queued bytes into `buf` and consumes them.
  size_t TakeLocked(uint8_t* buf, size_t length) {
    size_t n = std::min(length, PendingLocked());
    std::memcpy(buf, buffer.data() + offset, n);
    offset += n;
    if (offset == buffer.size()) {
      buffer.clear();
      offset = 0;
    } else if (offset > (64u << 10) && offset > buffer.size() / 2) {
      buffer.erase(0, offset);
      offset = 0;
    }
    if (n > 0) shared_->cv.notify_all();
    return n;
  }
  // The stream closed or the session went away: drop everything and release blocked writers.
  void GoneLocked() {
    gone = true;
    buffer.clear();
    buffer.shrink_to_fit();
    offset = 0;
    shared_->cv.notify_all();
  }

  int status() const { return status_; }
  const Metadata& headers() const { return headers_; }
  const Metadata& trailers() const { return trailers_; }

  // Guarded by shared_->mu.
  bool gone = false;                // stream closed or session closed
  bool dirty = false;               // listed in shared_->dirty
  bool headers_queued = false;      // SendHeaders (or Finish) was called
  bool headers_end_stream = false;  // trailers-only / headers-only response
  bool headers_submitted = false;   // handed to nghttp2_submit_response
  bool finished = false;            // no more data will come (Finish or end_stream headers)
  bool deferred = false;            // the DATA provider returned NGHTTP2_ERR_DEFERRED
  std::string buffer;               // queued body bytes; [offset, size) are pending
  size_t offset = 0;

 private:
  const std::shared_ptr<WriterShared> shared_;
  const int32_t stream_id_;
  const std::shared_ptr<CancelToken> cancel_;
  uint64_t cancel_handle_ = 0;
  int status_ = 0;     // guarded by shared_->mu
  Metadata headers_;   // guarded by shared_->mu
  Metadata trailers_;  // guarded by shared_->mu
};

// One client-initiated stream, strand-only.
struct Stream {
  RequestHead head;
  std::string body;
  size_t header_bytes = 0;  // name + value + 32 per field (RFC 9113 §6.5.2 accounting)
  size_t header_count = 0;
  bool headers_too_large = false;  // answered with 431
  bool rejected = false;           // reset or answered by the transport: never reaches Handle
  bool too_large = false;          // body over the limit: RejectTooLarge was dispatched
  bool request_done = false;       // END_STREAM received
  bool dispatched = false;         // handed to the engine (Handle or RejectTooLarge)
  bool response_done = false;      // END_STREAM sent
  std::shared_ptr<CancelToken> cancel = std::make_shared<CancelToken>();
  std::shared_ptr<Http2Writer> writer;  // set when dispatched
};

class Http2Session final : public Session {
 public:
  Http2Session(SessionHost* host, Engine* engine, SessionLimits limits)
      : host_(host),
        engine_(engine),
        limits_(limits),
        shared_(std::make_shared<WriterShared>(host, limits.max_pending_bytes_per_exchange,
                                               limits.write_stall_timeout)) {
    nghttp2_session_callbacks* cbs = nullptr;
    METALD_CHECK(nghttp2_session_callbacks_new(&cbs) == 0);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &OnBeginHeaders);
    nghttp2_session_callbacks_set_on_header_callback(cbs, &OnHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &OnFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &OnDataChunkRecv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &OnStreamClose);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &OnFrameSend);
    nghttp2_session_callbacks_set_error_callback2(cbs, &OnError);
    nghttp2_option* opt = nullptr;
    METALD_CHECK(nghttp2_option_new(&opt) == 0);
    // Bound what a peer can make us hold: HPACK table growth and unacked SETTINGS floods.
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    nghttp2_option_set_max_settings(opt, 32);
    // CONTINUATION flood bound (CVE-2024-28182). Debian's 1.52 backport counts a CONTINUATION
    // once per receive call that ends inside its 9-byte frame header, so the default (8) drops
    // an honest peer whose bytes arrive in small reads (rpc_http2_fuzz_regress_test). 128 still
    // bounds the flood; the header list itself is bounded by max_header_bytes.
    nghttp2_option_set_max_continuations(opt, 128);
    int rv = nghttp2_session_server_new2(&session_, cbs, this, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    METALD_CHECK(rv == 0);

    const nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits_.max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(kStreamWindow)},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
         static_cast<uint32_t>(std::min<size_t>(limits_.max_header_bytes, UINT32_MAX))},
    };
    METALD_CHECK(
        nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings)) == 0);
    METALD_CHECK(nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                                       kConnectionWindow) == 0);
  }

  ~Http2Session() override {
    OnClose();
    nghttp2_session_del(session_);
  }

  base::Status OnReadable(std::string_view bytes) override {
    if (!fatal_.ok()) return fatal_;
    if (closed_) return base::FailedPreconditionError("HTTP/2 session is closed");
    ssize_t rv = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(bytes.data()),
                                          bytes.size());
    RunActions();
    if (rv < 0) {
      uint32_t code = rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC || rv == NGHTTP2_ERR_PROTO
                          ? NGHTTP2_PROTOCOL_ERROR
                          : NGHTTP2_INTERNAL_ERROR;
      if (rv == NGHTTP2_ERR_FLOODED) code = NGHTTP2_ENHANCE_YOUR_CALM;
      // Queues a GOAWAY for the connection to flush (no-op if nghttp2 already queued one).
      (void)nghttp2_session_terminate_session(session_, code);
      fatal_ = base::InvalidArgumentError(std::string("HTTP/2 connection error: ") +
                                          nghttp2_strerror(static_cast<int>(rv)));
      return fatal_;
    }
    // A connection error found inside mem_recv only queues a GOAWAY; serializing it now makes
    // it visible (OnFrameSend sets fatal_) so the connection learns to close.
    Flush(&pending_out_);
    return fatal_;
  }

  void CollectOutput(std::string* out) override {
    if (!pending_out_.empty()) {
      out->append(pending_out_);
      pending_out_.clear();
    }
    if (closed_) return;
    Flush(out);
  }

  bool ShouldClose() const override {
    return pending_out_.empty() && nghttp2_session_want_read(session_) == 0 &&
           nghttp2_session_want_write(session_) == 0;
  }

  bool Busy() const override { return !streams_.empty() || !pending_out_.empty(); }

  // kRead while some request is still arriving; kNone while only responses are in progress
  // (a long server stream is bounded by its deadline, not by a socket timer); kIdle otherwise.
  TimerKind timer_kind() const override {
    bool any = false;
    for (const auto& [id, s] : streams_) {
      if (!s->request_done) return TimerKind::kRead;
      any = true;
    }
    return any || !pending_out_.empty() ? TimerKind::kNone : TimerKind::kIdle;
  }

  void OnClose() override {
    if (closed_) return;
    closed_ = true;
    {
      std::lock_guard lock(shared_->host_mu);
      shared_->host = nullptr;
    }
    std::vector<std::shared_ptr<CancelToken>> cancels;
    {
      std::lock_guard lock(shared_->mu);
      for (auto& [id, s] : streams_) {
        if (s->writer) s->writer->GoneLocked();
        if (!s->response_done) cancels.push_back(s->cancel);
      }
      shared_->dirty.clear();
      shared_->cv.notify_all();
    }
    streams_.clear();
    actions_.clear();
    for (auto& c : cancels) c->Cancel(base::CancelledError("Connection closed"));
  }

  void BeginShutdown() override {
    if (closed_ || shutdown_ != ShutdownState::kNone) return;
    // Two-step GOAWAY (RFC 9113 §6.8): the notice stops new streams at the client, the PING
    // round trip makes sure streams the client sent before seeing it have arrived, and the
    // final GOAWAY (on the PING ACK) names the last stream we will serve.
    if (nghttp2_submit_shutdown_notice(session_) != 0 ||
        nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr) != 0) {
      SubmitFinalGoaway();
      return;
    }
    shutdown_ = ShutdownState::kNoticeSent;
    host_->WakeWriter();
  }

 private:
  enum class ShutdownState { kNone, kNoticeSent, kGoawaySent };

  static Http2Session* Self(void* user_data) { return static_cast<Http2Session*>(user_data); }

  Stream* Find(int32_t stream_id) {
    auto it = streams_.find(stream_id);
    return it == streams_.end() ? nullptr : it->second.get();
  }

  void SubmitFinalGoaway() {
    shutdown_ = ShutdownState::kGoawaySent;
    (void)nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                                nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                                nullptr, 0);
  }

  // Applies writer changes to nghttp2, drains its output into *out, then runs the engine and
  // cancellation work that nghttp2 callbacks queued meanwhile.
  void Flush(std::string* out) {
    ApplyWriterChanges();
    for (;;) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) {
        if (fatal_.ok()) {
          fatal_ = base::InternalError(std::string("HTTP/2 send failed: ") +
                                       nghttp2_strerror(static_cast<int>(n)));
        }
        break;
      }
      if (n == 0) break;
      out->append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    RunActions();
  }

  void RunActions() {
    // Actions may queue more actions only through nghttp2 callbacks, which they do not cause.
    std::vector<std::function<void()>> actions;
    actions.swap(actions_);
    for (auto& a : actions) a();
  }

  void ApplyWriterChanges() {
    std::vector<int32_t> dirty;
    {
      std::lock_guard lock(shared_->mu);
      dirty.swap(shared_->dirty);
    }
    for (int32_t id : dirty) {
      Stream* s = Find(id);
      if (s == nullptr || !s->writer) continue;
      Http2Writer& w = *s->writer;
      enum { kNothing, kSubmit, kResume } todo = kNothing;
      int status = 0;
      Metadata headers;
      bool end_stream = false;
      {
        std::lock_guard lock(shared_->mu);
        w.dirty = false;
        if (w.gone) continue;
        if (w.headers_queued && !w.headers_submitted) {
          todo = kSubmit;
          w.headers_submitted = true;
          status = w.status();
          headers = w.headers();
          end_stream = w.headers_end_stream;
        } else if (w.headers_submitted && w.deferred && (w.PendingLocked() > 0 || w.finished)) {
          todo = kResume;
          w.deferred = false;
        }
      }
      if (todo == kSubmit) {
        SubmitResponse(id, status, headers, end_stream);
      } else if (todo == kResume) {
        (void)nghttp2_session_resume_data(session_, id);
      }
    }
  }

  void SubmitResponse(int32_t id, int status, const Metadata& headers, bool end_stream) {
    const std::string status_name = ":status";
    const std::string status_value = std::to_string(status);
    std::vector<nghttp2_nv> nv;
    nv.reserve(headers.size() + 1);
    nv.push_back(MakeNv(status_name, status_value));
    for (const auto& [name, value] : headers) {
      if (name.empty() || name[0] == ':' || IsConnectionSpecific(name)) continue;
      nv.push_back(MakeNv(name, value));
    }
    nghttp2_data_provider provider{};
    provider.read_callback = &ReadBody;
    int rv = nghttp2_submit_response(session_, id, nv.data(), nv.size(),
                                     end_stream ? nullptr : &provider);
    if (rv != 0)
      (void)nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
  }

  // Answers a stream from the transport itself (431), never reaching the engine.
  void RespondLocally(Stream* s, int32_t id, int status) {
    s->rejected = true;
    const std::string status_name = ":status";
    const std::string status_value = std::to_string(status);
    nghttp2_nv nv[] = {MakeNv(status_name, status_value)};
    if (nghttp2_submit_response(session_, id, nv, 1, nullptr) != 0) {
      (void)nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    }
  }

  void Reset(Stream* s, int32_t id, uint32_t code) {
    s->rejected = true;
    (void)nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, code);
  }

  std::shared_ptr<Http2Writer> MakeWriter(Stream* s, int32_t id) {
    s->dispatched = true;
    s->writer = std::make_shared<Http2Writer>(shared_, id, s->cancel);
    return s->writer;
  }

  void OnRequestEnd(Stream* s, int32_t id) {
    s->request_done = true;
    if (s->rejected || s->too_large || s->dispatched) return;
    auto writer = MakeWriter(s, id);
    actions_.push_back([engine = engine_, head = std::move(s->head), body = std::move(s->body),
                        writer, cancel = s->cancel]() mutable {
      engine->Handle(std::move(head), std::move(body), std::move(writer), std::move(cancel));
    });
    s->body.clear();
  }

  // ---- nghttp2 callbacks (on the strand, inside mem_recv / mem_send). ----

  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    Http2Session* self = Self(user_data);
    auto s = std::make_unique<Stream>();
    s->head.version = HttpVersion::kHttp2;
    s->head.peer = self->host_->peer();
    s->head.tls = self->host_->tls();
    self->streams_[frame->hd.stream_id] = std::move(s);
    return 0;
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name_data,
                      size_t name_len, const uint8_t* value_data, size_t value_len, uint8_t,
                      void* user_data) {
    Http2Session* self = Self(user_data);
    Stream* s = self->Find(frame->hd.stream_id);
    if (s == nullptr || s->rejected) return 0;
    s->header_bytes += name_len + value_len + 32;
    s->header_count++;
    if (s->header_bytes > self->limits_.max_header_bytes ||
        s->header_count > self->limits_.max_header_count) {
      s->headers_too_large = true;
    }
    if (s->headers_too_large) return 0;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;  // request trailers: unused
    std::string_view name(reinterpret_cast<const char*>(name_data), name_len);
    std::string_view value(reinterpret_cast<const char*>(value_data), value_len);
    RequestHead& head = s->head;
    // nghttp2's HTTP messaging checks already rejected bad names, duplicate or unknown
    // pseudo-headers and connection-specific fields (RST_STREAM PROTOCOL_ERROR).
    if (name == ":method") {
      head.method = value;
    } else if (name == ":path") {
      size_t q = value.find('?');
      head.path = value.substr(0, q);
      head.query = q == std::string_view::npos ? std::string() : std::string(value.substr(q + 1));
    } else if (name == ":authority") {
      if (!head.headers.Has("host")) head.headers.Add("host", value);
    } else if (name == "host") {
      if (!head.headers.Has("host")) head.headers.Add("host", value);
    } else if (!name.empty() && name[0] != ':') {
      head.headers.Add(name, value);
    }
    return 0;
  }

  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    Http2Session* self = Self(user_data);
    const int32_t id = frame->hd.stream_id;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS: {
        Stream* s = self->Find(id);
        if (s == nullptr) return 0;
        if (s->headers_too_large && !s->rejected && !s->dispatched) {
          self->RespondLocally(s, id, 431);
        } else if (frame->headers.cat == NGHTTP2_HCAT_REQUEST && !s->rejected &&
                   (s->head.method.empty() || s->head.path.empty() || s->head.path[0] != '/')) {
          self->Reset(s, id, NGHTTP2_PROTOCOL_ERROR);
        }
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) self->OnRequestEnd(s, id);
        break;
      }
      case NGHTTP2_DATA: {
        Stream* s = self->Find(id);
        if (s != nullptr && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) self->OnRequestEnd(s, id);
        break;
      }
      case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && self->shutdown_ == ShutdownState::kNoticeSent) {
          self->SubmitFinalGoaway();
        }
        break;
      default:
        break;
    }
    return 0;
  }

  static int OnDataChunkRecv(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                             size_t len, void* user_data) {
    Http2Session* self = Self(user_data);
    Stream* s = self->Find(stream_id);
    if (s == nullptr || s->rejected || s->too_large || s->dispatched) return 0;
    if (s->body.size() + len > self->limits_.max_message_bytes + kEnvelopePrefixBytes) {
      // Stop buffering; the rest of the body is received (flow control stays automatic) and
      // dropped. The stream is reset with NO_ERROR once the answer is out (OnFrameSend).
      s->too_large = true;
      s->body.clear();
      s->body.shrink_to_fit();
      auto writer = self->MakeWriter(s, stream_id);
      self->actions_.push_back([engine = self->engine_, head = s->head, writer]() mutable {
        engine->RejectTooLarge(std::move(head), std::move(writer));
      });
      return 0;
    }
    s->body.append(reinterpret_cast<const char*>(data), len);
    return 0;
  }

  static int OnFrameSend(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
    Http2Session* self = Self(user_data);
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
      if (self->fatal_.ok()) {
        self->fatal_ = base::InvalidArgumentError(
            "HTTP/2 connection error" +
            (self->last_error_.empty() ? std::string() : ": " + self->last_error_));
      }
      return 0;
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
      Stream* s = self->Find(frame->hd.stream_id);
      if (s == nullptr) return 0;
      s->response_done = true;
      // Answered before the request ended (too large, 431): the rest of the body is unwanted.
      if (!s->request_done) {
        (void)nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                        NGHTTP2_NO_ERROR);
      }
    }
    return 0;
  }

  static int OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                           void* user_data) {
    Http2Session* self = Self(user_data);
    auto it = self->streams_.find(stream_id);
    if (it == self->streams_.end()) return 0;
    std::unique_ptr<Stream> s = std::move(it->second);
    self->streams_.erase(it);
    if (s->writer) {
      std::lock_guard lock(self->shared_->mu);
      s->writer->GoneLocked();
    }
    if (!s->response_done) {
      std::string why = error_code == NGHTTP2_NO_ERROR ? std::string("Stream closed by peer")
                                                       : std::string("Stream reset by peer: ") +
                                                             nghttp2_http2_strerror(error_code);
      self->actions_.push_back([cancel = s->cancel, why = std::move(why)] {
        cancel->Cancel(base::CancelledError(why));
      });
    }
    return 0;
  }

  static int OnError(nghttp2_session*, int, const char* msg, size_t len, void* user_data) {
    Self(user_data)->last_error_.assign(msg, len);
    return 0;
  }

  static ssize_t ReadBody(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source*, void* user_data) {
    Http2Session* self = Self(user_data);
    Stream* s = self->Find(stream_id);
    if (s == nullptr || !s->writer) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    Http2Writer& w = *s->writer;
    std::lock_guard lock(self->shared_->mu);
    if (w.gone) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t n = w.TakeLocked(buf, length);
    if (w.PendingLocked() > 0) return static_cast<ssize_t>(n);
    if (!w.finished) {
      if (n > 0) return static_cast<ssize_t>(n);
      w.deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!w.trailers().empty()) {
      std::vector<nghttp2_nv> nv;
      nv.reserve(w.trailers().size());
      for (const auto& [name, value] : w.trailers()) {
        if (name.empty() || name[0] == ':' || IsConnectionSpecific(name)) continue;
        nv.push_back(MakeNv(name, value));
      }
      if (!nv.empty() && nghttp2_submit_trailer(session, stream_id, nv.data(), nv.size()) == 0) {
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      }
    }
    return static_cast<ssize_t>(n);
  }

  // Constant after construction.
  SessionHost* const host_;
  Engine* const engine_;
  const SessionLimits limits_;
  const std::shared_ptr<WriterShared> shared_;
  nghttp2_session* session_ = nullptr;

  // Strand-only.
  std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
  std::vector<std::function<void()>> actions_;  // queued by callbacks, run after nghttp2 returns
  std::string pending_out_;  // serialized by OnReadable, handed out by the next CollectOutput
  base::Status fatal_;       // set once the connection must close (GOAWAY with an error)
  std::string last_error_;   // nghttp2's last error message, for fatal_
  ShutdownState shutdown_ = ShutdownState::kNone;
  bool closed_ = false;
};

}  // namespace

std::unique_ptr<Session> MakeHttp2Session(SessionHost* host, Engine* engine, SessionLimits limits) {
  return std::make_unique<Http2Session>(host, engine, limits);
}

}  // namespace metald::rpc::internal

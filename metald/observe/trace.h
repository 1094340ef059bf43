#pragma once
// Tracing: W3C Trace Context (`traceparent`) and W3C Baggage propagation, spans, a Tracer with a
// pluggable SpanExporter, a batching exporter and an in-memory exporter for tests. The OTLP/HTTP
// exporter lives in metald/observe/export/.
//
//   Span span = tracer.StartSpan("BootVm", {.kind = SpanKind::kServer,
//                                           .parent = ParseTraceparent(header)});
//   span.SetAttribute("vm.id", id);
//   Span child = tracer.StartSpan("qmp.cont", {.parent = span.context()});
//   ...
//   span.SetStatus(status);  // span ends (and is exported) when destroyed or End() is called
//
// Concurrency model: Tracer and every exporter here are thread-safe. A Span is owned by one
// thread at a time (like a local variable): it is move-only and NOT thread-safe; hand it over by
// moving it. There is no implicit "current span" (thread-local context does not survive hops
// between Asio threads): the parent is always passed explicitly as a TraceContext.

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "metald/base/status.h"

namespace metald::observe {

// 16-byte trace id. All zero is invalid.
struct TraceId {
  std::array<uint8_t, 16> bytes{};
  bool valid() const;
  std::string ToHex() const;  // 32 lower-case hex digits
  friend bool operator==(const TraceId&, const TraceId&) = default;
};

// 8-byte span id. All zero is invalid (and means "no parent" in SpanData::parent_span_id).
struct SpanId {
  std::array<uint8_t, 8> bytes{};
  bool valid() const;
  std::string ToHex() const;  // 16 lower-case hex digits
  friend bool operator==(const SpanId&, const SpanId&) = default;
};

// What crosses process boundaries: the W3C trace context of one span.
struct TraceContext {
  static constexpr uint8_t kSampledFlag = 0x01;

  TraceId trace_id;
  SpanId span_id;
  uint8_t flags = 0;

  bool sampled() const { return (flags & kSampledFlag) != 0; }
  // Both ids valid.
  bool valid() const { return trace_id.valid() && span_id.valid(); }
  friend bool operator==(const TraceContext&, const TraceContext&) = default;
};

// Parses a `traceparent` header value strictly: "00-<32 hex>-<16 hex>-<2 hex>", lower-case hex
// only, non-zero ids, surrounding spaces/tabs allowed. Any other version (including a future one)
// or any deviation gives nullopt, and the caller starts a new trace.
std::optional<TraceContext> ParseTraceparent(std::string_view header);
// "00-<trace id>-<span id>-<flags>". REQUIRES: ctx.valid().
std::string FormatTraceparent(const TraceContext& ctx);

// W3C Baggage: application key/value pairs propagated with a trace.
// Limits (W3C): at most kMaxMembers entries and kMaxBytes bytes in the header.
class Baggage {
 public:
  static constexpr size_t kMaxMembers = 64;
  static constexpr size_t kMaxBytes = 8192;

  struct Entry {
    std::string key;       // an RFC 7230 token
    std::string value;     // decoded (any bytes)
    std::string metadata;  // the raw properties after the first ';', without it ("" if none)
  };

  // The value for `key`, if present.
  std::optional<std::string_view> Get(std::string_view key) const;
  // Adds or replaces `key`. invalid_argument when key is not a token or metadata is not valid
  // property syntax.
  base::Status Set(std::string key, std::string value, std::string metadata = "");
  // Removes `key` if present.
  void Remove(std::string_view key);
  const std::vector<Entry>& entries() const { return entries_; }
  bool empty() const { return entries_.empty(); }

 private:
  std::vector<Entry> entries_;  // Invariant: keys unique, valid tokens; insertion order.
};

// Parses a `baggage` header value (several headers must be joined with ','). Values are
// percent-decoded; a later duplicate key replaces an earlier one.
// Errors (invalid_argument): the header exceeds Baggage::kMaxBytes or kMaxMembers, a member is
// empty or malformed (key not a token, missing '=', a byte outside baggage-octet in a value, a
// bad percent escape, bad property syntax). Callers propagate no baggage on error.
base::Result<Baggage> ParseBaggage(std::string_view header);
// Formats `baggage` as a header value, percent-encoding what needs it. Entries that would exceed
// the W3C limits are left out (the first entries win). Empty baggage gives "".
std::string FormatBaggage(const Baggage& baggage);

enum class SpanKind { kInternal, kServer, kClient, kProducer, kConsumer };
enum class SpanStatusCode { kUnset, kOk, kError };

using AttributeValue = std::variant<std::string, bool, int64_t, double>;
struct Attribute {
  std::string key;
  AttributeValue value;
  friend bool operator==(const Attribute&, const Attribute&) = default;
};

struct SpanEvent {
  std::string name;
  std::chrono::system_clock::time_point time;
  std::vector<Attribute> attributes;
};

// A finished span as handed to exporters. A plain value.
struct SpanData {
  TraceContext context;        // trace id, this span's id, flags
  SpanId parent_span_id;       // invalid (zero) for a root span
  bool remote_parent = false;  // the parent came from another process (traceparent)
  std::string name;
  SpanKind kind = SpanKind::kInternal;
  std::chrono::system_clock::time_point start;
  std::chrono::system_clock::time_point end;
  std::vector<Attribute> attributes;
  std::vector<SpanEvent> events;
  SpanStatusCode status = SpanStatusCode::kUnset;
  std::string status_message;  // only with kError
  uint32_t dropped_attributes = 0;
  uint32_t dropped_events = 0;
};

// Receives finished spans. Implementations must be thread-safe.
class SpanExporter {
 public:
  virtual ~SpanExporter() = default;
  // Takes ownership of `spans` and exports them (or queues them). A failure is reported to the
  // caller only; spans are never retried by the Tracer.
  virtual base::Status Export(std::vector<SpanData> spans) = 0;
  // Returns once everything passed to Export before the call has been exported (or dropped).
  virtual base::Status Flush() { return base::OkStatus(); }
  // Flushes and releases resources; Export after Shutdown drops spans. Idempotent.
  virtual void Shutdown() {}
};

// Keeps every exported span in memory. For tests; thread-safe.
class InMemorySpanExporter : public SpanExporter {
 public:
  base::Status Export(std::vector<SpanData> spans) override;
  // A copy of every span exported so far, in export order.
  std::vector<SpanData> spans() const;
  // Number of Export calls (batches) received.
  size_t export_calls() const;
  // The first span named `name`, if any.
  std::optional<SpanData> Find(std::string_view name) const;
  void Clear();

 private:
  mutable std::mutex mutex_;
  std::vector<SpanData> spans_;  // guarded by mutex_
  size_t export_calls_ = 0;      // guarded by mutex_
};

struct BatchingSpanExporterOptions {
  // Spans waiting for export beyond this are dropped (counted in dropped_spans()). Default 2048.
  size_t max_queue_size = 2048;
  // Largest batch handed to the wrapped exporter; a full batch is exported at once. Default 512.
  size_t max_batch_size = 512;
  // A partial batch is exported after waiting this long. Zero: only when full, on Flush() or on
  // Shutdown(). Default 5 s.
  std::chrono::milliseconds flush_interval{5000};
};

// Queues spans and hands them to a wrapped exporter in batches from one background thread, so
// the thread that ends a span never waits for the network. Thread-safe.
class BatchingSpanExporter : public SpanExporter {
 public:
  // REQUIRES: inner != nullptr.
  BatchingSpanExporter(std::shared_ptr<SpanExporter> inner, BatchingSpanExporterOptions options);
  // Shuts down (exports what is queued).
  ~BatchingSpanExporter() override;

  // Queues the spans; never blocks on the wrapped exporter. Returns resource_exhausted when some
  // spans were dropped because the queue was full, unavailable after Shutdown().
  base::Status Export(std::vector<SpanData> spans) override;
  // Waits until every span queued before the call has been handed to the wrapped exporter, then
  // flushes it. Returns the first export error seen since the previous Flush, if any.
  base::Status Flush() override;
  void Shutdown() override;

  uint64_t dropped_spans() const;

 private:
  void Run();

  // Constant after construction.
  const std::shared_ptr<SpanExporter> inner_;
  const BatchingSpanExporterOptions options_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;     // worker: work, flush request or stop
  std::condition_variable drained_;  // flushers: exported_seq_ advanced
  // Guarded by mutex_:
  std::deque<SpanData> queue_;
  uint64_t enqueued_seq_ = 0;  // spans accepted so far
  uint64_t exported_seq_ = 0;  // spans handed to inner_ (or dropped by it) so far
  uint64_t flush_target_ = 0;  // worker exports partial batches until exported_seq_ reaches it
  uint64_t dropped_ = 0;
  base::Status first_error_;
  bool stop_ = false;         // Shutdown() called: the worker drains the queue and exits
  bool worker_done_ = false;  // the worker has exited; nothing more will be exported

  std::thread worker_;  // started last in the constructor
};

// Returns uniformly random 64-bit values. Must be thread-safe.
using RandomSource = std::function<uint64_t()>;
// A thread-safe source seeded from std::random_device.
RandomSource DefaultRandomSource();

struct TracerOptions {
  // Where finished, sampled spans go. Default (nullptr): nowhere (ids are still made and
  // propagated).
  std::shared_ptr<SpanExporter> exporter = nullptr;
  // Source of trace and span ids (tests inject a deterministic one). Default: DefaultRandomSource.
  RandomSource random = nullptr;
  // Wall clock for span times. Default: system_clock::now.
  std::function<std::chrono::system_clock::time_point()> clock = nullptr;
  // Fraction of new (root) traces that are sampled, 0..1, decided from the trace id so every
  // service decides alike. Children follow their parent's sampled flag. Default 1.
  double root_sample_ratio = 1.0;
  // Per-span caps; extra attributes/events are dropped and counted. Default 128 each.
  size_t max_attributes = 128;
  size_t max_events = 128;
};

class Tracer;

struct StartSpanOptions {
  SpanKind kind = SpanKind::kInternal;
  // The parent. nullopt or an invalid context starts a new trace.
  std::optional<TraceContext> parent = std::nullopt;
  // True when `parent` came from another process (e.g. a traceparent header).
  bool remote_parent = false;
  std::vector<Attribute> attributes = {};
};

// One operation being traced. Move-only, NOT thread-safe (see the file comment). A span that is
// not sampled records nothing but still has a valid context for propagation. Ends on
// destruction if End() was not called.
class Span {
 public:
  Span(Span&&) noexcept;
  Span& operator=(Span&&) noexcept;
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;
  ~Span();

  // This span's context: pass it as the parent of children and format it into traceparent.
  const TraceContext& context() const { return context_; }
  // True when the span records data (it is sampled, has a tracer and has not ended).
  bool recording() const { return data_ != nullptr; }

  // Set or replace an attribute. No-op when not recording. The overloads map every string type
  // to std::string, every integer to int64_t, so `2.5` stays a double and `2` an integer.
  void SetAttribute(std::string_view key, AttributeValue value);
  void SetAttribute(std::string_view key, std::string_view value) {
    SetAttribute(key, AttributeValue(std::string(value)));
  }
  void SetAttribute(std::string_view key, const std::string& value) {
    SetAttribute(key, AttributeValue(value));
  }
  void SetAttribute(std::string_view key, const char* value) {
    SetAttribute(key, AttributeValue(std::string(value)));
  }
  void SetAttribute(std::string_view key, bool value) { SetAttribute(key, AttributeValue(value)); }
  void SetAttribute(std::string_view key, double value) {
    SetAttribute(key, AttributeValue(value));
  }
  template <typename T>
  requires(std::is_integral_v<T> &&
           !std::is_same_v<T, bool>) void SetAttribute(std::string_view key, T value) {
    SetAttribute(key, AttributeValue(static_cast<int64_t>(value)));
  }
  void AddEvent(std::string_view name, std::vector<Attribute> attributes = {});
  // kOk is final (later SetStatus calls are ignored, as OpenTelemetry specifies); kUnset is
  // ignored; the message is kept only with kError.
  void SetStatus(SpanStatusCode code, std::string_view message = "");
  // An error Status sets kError with "code: message"; an OK Status changes nothing.
  void SetStatus(const base::Status& status);
  // Records the end time and exports the span. Idempotent.
  void End();

 private:
  friend class Tracer;
  struct TracerCore;
  Span(std::shared_ptr<const TracerCore> core, TraceContext ctx, std::unique_ptr<SpanData> data);

  std::shared_ptr<const TracerCore> core_;  // null for a default/moved-from span
  TraceContext context_;
  std::unique_ptr<SpanData> data_;  // null when not recording or ended
};

// Makes spans. Thread-safe. Spans keep the tracer's internals alive, so a Span may outlive its
// Tracer.
class Tracer {
 public:
  explicit Tracer(TracerOptions options = {});

  // Starts a span now. See StartSpanOptions for how the parent is chosen.
  Span StartSpan(std::string_view name, StartSpanOptions options = {}) const;
  // A server span continuing the trace in a `traceparent` header value; an absent or invalid
  // header starts a new trace.
  Span StartServerSpan(std::string_view name, std::string_view traceparent) const;

  // Flushes the exporter (if any).
  base::Status Flush() const;

 private:
  std::shared_ptr<const Span::TracerCore> core_;
};

}  // namespace metald::observe

#include "metald/observe/trace.h"

#include <random>

namespace metald::observe {
namespace {

constexpr std::string_view kHex = "0123456789abcdef";

template <size_t N>
std::string ToHexString(const std::array<uint8_t, N>& bytes) {
  std::string out;
  out.reserve(2 * N);
  for (uint8_t b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xF]);
  }
  return out;
}

// Lower-case hex only (W3C forbids upper case in traceparent).
int LowerHexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

template <size_t N>
bool ParseLowerHex(std::string_view s, std::array<uint8_t, N>& out) {
  if (s.size() != 2 * N) return false;
  for (size_t i = 0; i < N; ++i) {
    const int hi = LowerHexValue(s[2 * i]);
    const int lo = LowerHexValue(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

template <size_t N>
bool AllZero(const std::array<uint8_t, N>& bytes) {
  for (uint8_t b : bytes) {
    if (b != 0) return false;
  }
  return true;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// RFC 7230 tchar.
bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

// W3C baggage-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E.
bool IsBaggageOctet(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return c == 0x21 || (c >= 0x23 && c <= 0x2B) || (c >= 0x2D && c <= 0x3A) ||
         (c >= 0x3C && c <= 0x5B) || (c >= 0x5D && c <= 0x7E);
}

int HexValue(char c) {
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return LowerHexValue(c);
}

// Decodes a baggage value; false on a byte outside baggage-octet or a bad %XX escape.
bool DecodeValue(std::string_view s, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (!IsBaggageOctet(s[i])) return false;
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return false;
    const int hi = HexValue(s[i + 1]);
    const int lo = HexValue(s[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out.push_back(static_cast<char>(hi << 4 | lo));
    i += 2;
  }
  return true;
}

std::string EncodeValue(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (IsBaggageOctet(c) && c != '%') {
      out.push_back(c);
    } else {
      const auto b = static_cast<unsigned char>(c);
      out.push_back('%');
      out.push_back("0123456789ABCDEF"[b >> 4]);
      out.push_back("0123456789ABCDEF"[b & 0xF]);
    }
  }
  return out;
}

// property = key OWS "=" OWS value / key, separated by OWS ";" OWS.
bool ValidProperties(std::string_view metadata) {
  if (metadata.empty()) return true;
  size_t pos = 0;
  while (true) {
    const size_t semi = metadata.find(';', pos);
    std::string_view prop = TrimOws(metadata.substr(pos, semi - pos));
    const size_t eq = prop.find('=');
    if (!IsToken(TrimOws(prop.substr(0, eq)))) return false;
    if (eq != std::string_view::npos) {
      std::string ignored;
      if (!DecodeValue(TrimOws(prop.substr(eq + 1)), ignored)) return false;
    }
    if (semi == std::string_view::npos) return true;
    pos = semi + 1;
  }
}

}  // namespace

bool TraceId::valid() const { return !AllZero(bytes); }
std::string TraceId::ToHex() const { return ToHexString(bytes); }
bool SpanId::valid() const { return !AllZero(bytes); }
std::string SpanId::ToHex() const { return ToHexString(bytes); }

std::optional<TraceContext> ParseTraceparent(std::string_view header) {
  header = TrimOws(header);
  // version(2) '-' trace-id(32) '-' parent-id(16) '-' flags(2)
  if (header.size() != 55 || header[2] != '-' || header[35] != '-' || header[52] != '-') {
    return std::nullopt;
  }
  if (header.substr(0, 2) != "00") return std::nullopt;
  TraceContext ctx;
  std::array<uint8_t, 1> flags{};
  if (!ParseLowerHex(header.substr(3, 32), ctx.trace_id.bytes) ||
      !ParseLowerHex(header.substr(36, 16), ctx.span_id.bytes) ||
      !ParseLowerHex(header.substr(53, 2), flags)) {
    return std::nullopt;
  }
  if (!ctx.valid()) return std::nullopt;
  ctx.flags = flags[0];
  return ctx;
}

std::string FormatTraceparent(const TraceContext& ctx) {
  std::string out = "00-";
  out += ctx.trace_id.ToHex();
  out += '-';
  out += ctx.span_id.ToHex();
  out += '-';
  out += ToHexString(std::array<uint8_t, 1>{ctx.flags});
  return out;
}

std::optional<std::string_view> Baggage::Get(std::string_view key) const {
  for (const Entry& e : entries_) {
    if (e.key == key) return std::string_view(e.value);
  }
  return std::nullopt;
}

base::Status Baggage::Set(std::string key, std::string value, std::string metadata) {
  if (!IsToken(key))
    return base::InvalidArgumentError("Baggage key \"" + key + "\" is not a token");
  if (!ValidProperties(metadata)) {
    return base::InvalidArgumentError("Baggage metadata for \"" + key + "\" is malformed");
  }
  for (Entry& e : entries_) {
    if (e.key == key) {
      e.value = std::move(value);
      e.metadata = std::move(metadata);
      return base::OkStatus();
    }
  }
  entries_.push_back(Entry{std::move(key), std::move(value), std::move(metadata)});
  return base::OkStatus();
}

void Baggage::Remove(std::string_view key) {
  std::erase_if(entries_, [key](const Entry& e) { return e.key == key; });
}

base::Result<Baggage> ParseBaggage(std::string_view header) {
  if (header.size() > Baggage::kMaxBytes) {
    return base::InvalidArgumentError("Baggage header exceeds 8192 bytes");
  }
  Baggage baggage;
  if (TrimOws(header).empty()) return baggage;
  size_t members = 0;
  size_t pos = 0;
  while (true) {
    const size_t comma = header.find(',', pos);
    std::string_view member = TrimOws(header.substr(pos, comma - pos));
    if (++members > Baggage::kMaxMembers) {
      return base::InvalidArgumentError("Baggage header has more than 64 members");
    }
    if (member.empty()) return base::InvalidArgumentError("Baggage header has an empty member");
    const size_t semi = member.find(';');
    std::string_view kv = TrimOws(member.substr(0, semi));
    std::string_view metadata =
        semi == std::string_view::npos ? std::string_view() : TrimOws(member.substr(semi + 1));
    const size_t eq = kv.find('=');
    if (eq == std::string_view::npos) {
      return base::InvalidArgumentError("Baggage member without '='");
    }
    std::string key(TrimOws(kv.substr(0, eq)));
    std::string value;
    if (!DecodeValue(TrimOws(kv.substr(eq + 1)), value)) {
      return base::InvalidArgumentError("Baggage value for \"" + key + "\" is malformed");
    }
    RETURN_IF_ERROR(baggage.Set(std::move(key), std::move(value), std::string(metadata)));
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return baggage;
}

std::string FormatBaggage(const Baggage& baggage) {
  std::string out;
  size_t members = 0;
  for (const Baggage::Entry& e : baggage.entries()) {
    std::string member = e.key + "=" + EncodeValue(e.value);
    if (!e.metadata.empty()) member += ";" + e.metadata;
    const size_t added = member.size() + (out.empty() ? 0 : 1);
    if (members == Baggage::kMaxMembers || out.size() + added > Baggage::kMaxBytes) continue;
    if (!out.empty()) out.push_back(',');
    out += member;
    ++members;
  }
  return out;
}

// ---- exporters --------------------------------------------------------------------------------

base::Status InMemorySpanExporter::Export(std::vector<SpanData> spans) {
  std::lock_guard lock(mutex_);
  ++export_calls_;
  for (SpanData& s : spans) spans_.push_back(std::move(s));
  return base::OkStatus();
}

std::vector<SpanData> InMemorySpanExporter::spans() const {
  std::lock_guard lock(mutex_);
  return spans_;
}

size_t InMemorySpanExporter::export_calls() const {
  std::lock_guard lock(mutex_);
  return export_calls_;
}

std::optional<SpanData> InMemorySpanExporter::Find(std::string_view name) const {
  std::lock_guard lock(mutex_);
  for (const SpanData& s : spans_) {
    if (s.name == name) return s;
  }
  return std::nullopt;
}

void InMemorySpanExporter::Clear() {
  std::lock_guard lock(mutex_);
  spans_.clear();
  export_calls_ = 0;
}

BatchingSpanExporter::BatchingSpanExporter(std::shared_ptr<SpanExporter> inner,
                                           BatchingSpanExporterOptions options)
    : inner_(std::move(inner)), options_(options) {
  worker_ = std::thread([this] { Run(); });
}

BatchingSpanExporter::~BatchingSpanExporter() { Shutdown(); }

base::Status BatchingSpanExporter::Export(std::vector<SpanData> spans) {
  size_t dropped = 0;
  {
    std::lock_guard lock(mutex_);
    if (stop_) {
      dropped_ += spans.size();
      return base::UnavailableError("Span exporter is shut down");
    }
    for (SpanData& s : spans) {
      if (queue_.size() >= options_.max_queue_size) {
        ++dropped;
        continue;
      }
      queue_.push_back(std::move(s));
      ++enqueued_seq_;
    }
    dropped_ += dropped;
    if (queue_.size() >= options_.max_batch_size) wake_.notify_one();
  }
  if (dropped > 0) {
    return base::ResourceExhaustedError("Span queue full: dropped " + std::to_string(dropped) +
                                        " spans");
  }
  return base::OkStatus();
}

base::Status BatchingSpanExporter::Flush() {
  base::Status error;
  {
    std::unique_lock lock(mutex_);
    const uint64_t target = enqueued_seq_;
    flush_target_ = std::max(flush_target_, target);
    wake_.notify_one();
    drained_.wait(lock, [&] { return exported_seq_ >= target || worker_done_; });
    error = std::exchange(first_error_, base::OkStatus());
  }
  base::Status inner = inner_->Flush();
  return error.ok() ? inner : error;
}

void BatchingSpanExporter::Shutdown() {
  {
    std::lock_guard lock(mutex_);
    if (stop_) return;
    stop_ = true;
    wake_.notify_one();
  }
  worker_.join();  // the worker drains the queue before it exits
  inner_->Shutdown();
}

uint64_t BatchingSpanExporter::dropped_spans() const {
  std::lock_guard lock(mutex_);
  return dropped_;
}

void BatchingSpanExporter::Run() {
  std::unique_lock lock(mutex_);
  while (true) {
    auto ready = [&] {
      return stop_ || queue_.size() >= options_.max_batch_size ||
             (exported_seq_ < flush_target_ && !queue_.empty());
    };
    if (options_.flush_interval.count() > 0) {
      // A timeout with a partial batch exports it too.
      if (!wake_.wait_for(lock, options_.flush_interval, ready) && queue_.empty()) continue;
    } else {
      wake_.wait(lock, ready);
    }
    if (queue_.empty()) {
      if (stop_) {
        worker_done_ = true;
        drained_.notify_all();
        return;
      }
      continue;
    }
    const size_t n = std::min(queue_.size(), options_.max_batch_size);
    std::vector<SpanData> batch;
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lock.unlock();
    // The wrapped exporter runs without the lock: Export() callers never wait for the network.
    base::Status st = inner_->Export(std::move(batch));
    lock.lock();
    if (!st.ok() && first_error_.ok()) first_error_ = std::move(st);
    exported_seq_ += n;
    drained_.notify_all();
  }
}

RandomSource DefaultRandomSource() {
  struct State {
    std::mutex mutex;
    std::mt19937_64 engine;
  };
  auto state = std::make_shared<State>();
  std::random_device rd;
  std::seed_seq seed{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
  state->engine.seed(seed);
  return [state] {
    std::lock_guard lock(state->mutex);
    return state->engine();
  };
}

// ---- spans ------------------------------------------------------------------------------------

struct Span::TracerCore {
  std::shared_ptr<SpanExporter> exporter;
  RandomSource random;
  std::function<std::chrono::system_clock::time_point()> clock;
  double root_sample_ratio;
  size_t max_attributes;
  size_t max_events;

  SpanId NewSpanId() const {
    SpanId id;
    do {
      uint64_t r = random();
      for (int i = 0; i < 8; ++i) id.bytes[i] = static_cast<uint8_t>(r >> (56 - 8 * i));
    } while (!id.valid());
    return id;
  }
  TraceId NewTraceId() const {
    TraceId id;
    do {
      for (int half = 0; half < 2; ++half) {
        uint64_t r = random();
        for (int i = 0; i < 8; ++i)
          id.bytes[8 * half + i] = static_cast<uint8_t>(r >> (56 - 8 * i));
      }
    } while (!id.valid());
    return id;
  }
  // TraceIdRatioBased: the low 8 bytes of the id, as a number, below ratio * 2^64.
  bool SampleRoot(const TraceId& id) const {
    if (root_sample_ratio >= 1.0) return true;
    if (!(root_sample_ratio > 0.0)) return false;
    uint64_t x = 0;
    for (int i = 8; i < 16; ++i) x = x << 8 | id.bytes[i];
    return static_cast<double>(x) < root_sample_ratio * 18446744073709551616.0;
  }
};

Span::Span(std::shared_ptr<const TracerCore> core, TraceContext ctx, std::unique_ptr<SpanData> data)
    : core_(std::move(core)), context_(ctx), data_(std::move(data)) {}

Span::Span(Span&&) noexcept = default;

Span& Span::operator=(Span&& other) noexcept {
  if (this != &other) {
    End();
    core_ = std::move(other.core_);
    context_ = other.context_;
    data_ = std::move(other.data_);
  }
  return *this;
}

Span::~Span() { End(); }

void Span::SetAttribute(std::string_view key, AttributeValue value) {
  if (!data_) return;
  for (Attribute& a : data_->attributes) {
    if (a.key == key) {
      a.value = std::move(value);
      return;
    }
  }
  if (data_->attributes.size() >= core_->max_attributes) {
    ++data_->dropped_attributes;
    return;
  }
  data_->attributes.push_back(Attribute{std::string(key), std::move(value)});
}

void Span::AddEvent(std::string_view name, std::vector<Attribute> attributes) {
  if (!data_) return;
  if (data_->events.size() >= core_->max_events) {
    ++data_->dropped_events;
    return;
  }
  data_->events.push_back(SpanEvent{std::string(name), core_->clock(), std::move(attributes)});
}

void Span::SetStatus(SpanStatusCode code, std::string_view message) {
  if (!data_ || code == SpanStatusCode::kUnset || data_->status == SpanStatusCode::kOk) return;
  data_->status = code;
  data_->status_message = code == SpanStatusCode::kError ? std::string(message) : std::string();
}

void Span::SetStatus(const base::Status& status) {
  if (!status.ok()) SetStatus(SpanStatusCode::kError, status.ToString());
}

void Span::End() {
  if (!data_) return;
  data_->end = core_->clock();
  std::unique_ptr<SpanData> data = std::move(data_);
  if (core_->exporter) {
    std::vector<SpanData> batch;
    batch.push_back(std::move(*data));
    // A failed export (queue full, exporter down) must not affect the traced operation.
    (void)core_->exporter->Export(std::move(batch));
  }
}

Tracer::Tracer(TracerOptions options) {
  auto core = std::make_shared<Span::TracerCore>();
  core->exporter = std::move(options.exporter);
  core->random = options.random ? std::move(options.random) : DefaultRandomSource();
  core->clock =
      options.clock ? std::move(options.clock) : [] { return std::chrono::system_clock::now(); };
  core->root_sample_ratio = options.root_sample_ratio;
  core->max_attributes = options.max_attributes;
  core->max_events = options.max_events;
  core_ = std::move(core);
}

Span Tracer::StartSpan(std::string_view name, StartSpanOptions options) const {
  TraceContext ctx;
  SpanId parent_span_id;
  const bool has_parent = options.parent.has_value() && options.parent->valid();
  if (has_parent) {
    ctx.trace_id = options.parent->trace_id;
    ctx.flags = options.parent->flags;
    parent_span_id = options.parent->span_id;
  } else {
    ctx.trace_id = core_->NewTraceId();
    ctx.flags = core_->SampleRoot(ctx.trace_id) ? TraceContext::kSampledFlag : 0;
  }
  ctx.span_id = core_->NewSpanId();
  std::unique_ptr<SpanData> data;
  if (ctx.sampled() && core_->exporter) {
    data = std::make_unique<SpanData>();
    data->context = ctx;
    data->parent_span_id = parent_span_id;
    data->remote_parent = has_parent && options.remote_parent;
    data->name = std::string(name);
    data->kind = options.kind;
    data->start = core_->clock();
  }
  Span span(core_, ctx, std::move(data));
  for (Attribute& a : options.attributes) span.SetAttribute(a.key, std::move(a.value));
  return span;
}

Span Tracer::StartServerSpan(std::string_view name, std::string_view traceparent) const {
  return StartSpan(
      name,
      {.kind = SpanKind::kServer, .parent = ParseTraceparent(traceparent), .remote_parent = true});
}

base::Status Tracer::Flush() const {
  return core_->exporter ? core_->exporter->Flush() : base::OkStatus();
}

}  // namespace metald::observe

#include "metald/observe/trace.h"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <set>
#include <thread>

namespace metald::observe {
namespace {

using std::chrono::system_clock;

// ---- traceparent --------------------------------------------------------------------------------

constexpr std::string_view kW3cExample = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(TraceparentTest, ParsesTheW3cExampleAndRoundTrips) {
  auto ctx = ParseTraceparent(kW3cExample);
  ASSERT_TRUE(ctx.has_value());
  EXPECT_EQ(ctx->trace_id.ToHex(), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(ctx->span_id.ToHex(), "00f067aa0ba902b7");
  EXPECT_EQ(ctx->trace_id.bytes[0], 0x4b);
  EXPECT_EQ(ctx->span_id.bytes[7], 0xb7);
  EXPECT_TRUE(ctx->sampled());
  EXPECT_EQ(FormatTraceparent(*ctx), kW3cExample);

  auto unsampled = ParseTraceparent(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\t");
  ASSERT_TRUE(unsampled.has_value()) << "surrounding OWS is allowed";
  EXPECT_FALSE(unsampled->sampled());
}

TEST(TraceparentTest, RejectsEverythingNotStrictVersion00) {
  const std::string_view bad[] = {
      "",
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  // upper-case trace id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",  // upper-case span id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",  // upper-case flags
      "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // other version
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // forbidden version
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  // zero trace id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  // zero span id
      "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",   // short trace id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",   // short span id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
      "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
      "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",  // non-hex
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
  };
  for (std::string_view h : bad) EXPECT_FALSE(ParseTraceparent(h).has_value()) << h;
}

// ---- baggage ------------------------------------------------------------------------------------

TEST(BaggageTest, ParsesW3cExamples) {
  auto b = ParseBaggage("userId=alice,serverNode=DF%2028,isProduction=false");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->Get("userId"), "alice");
  EXPECT_EQ(b->Get("serverNode"), "DF 28");
  EXPECT_EQ(b->Get("isProduction"), "false");
  EXPECT_FALSE(b->Get("missing").has_value());

  auto p = ParseBaggage(
      "key1=value1;property1;property2, key2 = value2, key3=value3; "
      "propertyKey=propertyValue");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->entries().size(), 3u);
  EXPECT_EQ(p->entries()[0].metadata, "property1;property2");
  EXPECT_EQ(p->Get("key2"), "value2");
  EXPECT_EQ(p->entries()[2].metadata, "propertyKey=propertyValue");

  auto dup = ParseBaggage("a=1,b=2,a=3");
  ASSERT_TRUE(dup.ok());
  EXPECT_EQ(dup->entries().size(), 2u);
  EXPECT_EQ(dup->Get("a"), "3");

  auto empty = ParseBaggage("  ");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(BaggageTest, RejectsMalformedHeaders) {
  const std::string_view bad[] = {
      "novalue", "a=1,,b=2", "a=1,",           "=v",     "k y=v",     "a=b c", "a=\"q\"", "a=x\\y",
      "a=%zz",   "a=%4",     "a=1;bad prop=1", "a=1;=x", "a=1;p=%G0", "(k)=v",
  };
  for (std::string_view h : bad) {
    auto b = ParseBaggage(h);
    EXPECT_FALSE(b.ok()) << h;
    if (!b.ok()) {
      EXPECT_EQ(b.status().code(), base::StatusCode::kInvalidArgument);
    }
  }
}

TEST(BaggageTest, EnforcesLimits) {
  std::string members;
  for (int i = 0; i < 64; ++i) members += (i ? ",k" : "k") + std::to_string(i) + "=v";
  EXPECT_TRUE(ParseBaggage(members).ok());
  EXPECT_FALSE(ParseBaggage(members + ",k64=v").ok()) << "65 members";
  EXPECT_FALSE(ParseBaggage("k=" + std::string(8191, 'v')).ok()) << "8193 bytes";
  EXPECT_TRUE(ParseBaggage("k=" + std::string(8190, 'v')).ok()) << "8192 bytes";
}

TEST(BaggageTest, FormatEncodesAndRoundTrips) {
  Baggage b;
  ASSERT_TRUE(b.Set("userId", "alice").ok());
  ASSERT_TRUE(b.Set("node", "DF 28,\"x\";100%\\").ok());
  ASSERT_TRUE(b.Set("utf8", "caf\xc3\xa9").ok());
  ASSERT_TRUE(b.Set("p", "v", "prop1;k=v").ok());
  EXPECT_EQ(b.Set("bad key", "v").code(), base::StatusCode::kInvalidArgument);
  EXPECT_EQ(b.Set("k", "v", "bad prop").code(), base::StatusCode::kInvalidArgument);
  const std::string header = FormatBaggage(b);
  EXPECT_EQ(header, "userId=alice,node=DF%2028%2C%22x%22%3B100%25%5C,utf8=caf%C3%A9,p=v;prop1;k=v");
  auto parsed = ParseBaggage(header);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->Get("node"), "DF 28,\"x\";100%\\");
  EXPECT_EQ(parsed->Get("utf8"), "caf\xc3\xa9");
  EXPECT_EQ(parsed->entries()[3].metadata, "prop1;k=v");

  b.Remove("node");
  EXPECT_FALSE(b.Get("node").has_value());
  EXPECT_EQ(FormatBaggage(Baggage()), "");
}

TEST(BaggageTest, FormatDropsEntriesBeyondTheLimits) {
  Baggage many;
  for (int i = 0; i < 70; ++i) ASSERT_TRUE(many.Set("k" + std::to_string(i), "v").ok());
  auto parsed = ParseBaggage(FormatBaggage(many));
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->entries().size(), 64u);
  EXPECT_TRUE(parsed->Get("k63").has_value());
  EXPECT_FALSE(parsed->Get("k64").has_value());

  Baggage big;
  ASSERT_TRUE(big.Set("a", std::string(5000, 'x')).ok());
  ASSERT_TRUE(big.Set("b", std::string(5000, 'y')).ok());  // would exceed 8192 bytes
  ASSERT_TRUE(big.Set("c", "small").ok());
  const std::string header = FormatBaggage(big);
  EXPECT_LE(header.size(), Baggage::kMaxBytes);
  auto p = ParseBaggage(header);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->Get("a").has_value());
  EXPECT_FALSE(p->Get("b").has_value());
  EXPECT_EQ(p->Get("c"), "small");
}

// ---- tracer -------------------------------------------------------------------------------------

// Deterministic ids: 1, 2, 3, ... (a zero draw would be skipped by the tracer).
RandomSource Counting() {
  auto n = std::make_shared<std::atomic<uint64_t>>(0);
  return [n] { return ++*n; };
}

struct FakeClock {
  std::shared_ptr<std::atomic<int64_t>> us = std::make_shared<std::atomic<int64_t>>(1'000'000);
  std::function<system_clock::time_point()> fn() const {
    auto p = us;
    return [p] { return system_clock::time_point(std::chrono::microseconds(p->load())); };
  }
  void Advance(int64_t d) const { *us += d; }
};

TEST(TracerTest, RootAndChildSpansFormOneTrace) {
  auto exporter = std::make_shared<InMemorySpanExporter>();
  FakeClock clock;
  Tracer tracer({.exporter = exporter, .random = Counting(), .clock = clock.fn()});
  {
    Span root = tracer.StartSpan(
        "BootVm", {.kind = SpanKind::kServer, .attributes = {{"vm.id", std::string("vm-1")}}});
    EXPECT_TRUE(root.recording());
    EXPECT_TRUE(root.context().valid());
    EXPECT_TRUE(root.context().sampled());
    EXPECT_EQ(root.context().trace_id.ToHex(), "00000000000000010000000000000002");
    EXPECT_EQ(root.context().span_id.ToHex(), "0000000000000003");
    clock.Advance(500);
    {
      Span child =
          tracer.StartSpan("qmp.cont", {.kind = SpanKind::kClient, .parent = root.context()});
      EXPECT_EQ(child.context().trace_id, root.context().trace_id);
      EXPECT_NE(child.context().span_id, root.context().span_id);
      child.SetAttribute("attempt", 2);
      clock.Advance(250);
    }                                  // child ends here
    root.SetStatus(base::OkStatus());  // no change
    clock.Advance(1000);
  }
  auto spans = exporter->spans();
  ASSERT_EQ(spans.size(), 2u);
  const SpanData& child = spans[0];
  const SpanData& root = spans[1];
  EXPECT_EQ(child.name, "qmp.cont");
  EXPECT_EQ(child.kind, SpanKind::kClient);
  EXPECT_EQ(child.parent_span_id, root.context.span_id);
  EXPECT_FALSE(child.remote_parent);
  EXPECT_EQ(child.end - child.start, std::chrono::microseconds(250));
  EXPECT_EQ(child.attributes, (std::vector<Attribute>{{"attempt", int64_t{2}}}));
  EXPECT_EQ(root.name, "BootVm");
  EXPECT_FALSE(root.parent_span_id.valid());
  EXPECT_EQ(root.end - root.start, std::chrono::microseconds(1750));
  EXPECT_EQ(root.attributes, (std::vector<Attribute>{{"vm.id", std::string("vm-1")}}));
  EXPECT_EQ(root.status, SpanStatusCode::kUnset);
}

TEST(TracerTest, ServerSpanContinuesAValidTraceparentAndRestartsOnAnInvalidOne) {
  auto exporter = std::make_shared<InMemorySpanExporter>();
  Tracer tracer({.exporter = exporter, .random = Counting()});
  {
    Span s = tracer.StartServerSpan("ListVms", kW3cExample);
    EXPECT_EQ(s.context().trace_id.ToHex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    EXPECT_EQ(FormatTraceparent(s.context()).substr(0, 36), "00-4bf92f3577b34da6a3ce929d0e0e4736-");
  }
  {
    Span s = tracer.StartServerSpan("ListVms",
                                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01");
    EXPECT_NE(s.context().trace_id.ToHex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    EXPECT_TRUE(s.context().valid());
  }
  auto spans = exporter->spans();
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(spans[0].parent_span_id.ToHex(), "00f067aa0ba902b7");
  EXPECT_TRUE(spans[0].remote_parent);
  EXPECT_EQ(spans[0].kind, SpanKind::kServer);
  EXPECT_FALSE(spans[1].parent_span_id.valid());
  EXPECT_FALSE(spans[1].remote_parent);
}

TEST(TracerTest, UnsampledTracesPropagateButRecordNothing) {
  auto exporter = std::make_shared<InMemorySpanExporter>();
  Tracer tracer({.exporter = exporter, .random = Counting(), .root_sample_ratio = 0.0});
  {
    Span root = tracer.StartSpan("root");
    EXPECT_FALSE(root.recording());
    EXPECT_TRUE(root.context().valid());
    EXPECT_FALSE(root.context().sampled());
    Span child = tracer.StartSpan("child", {.parent = root.context()});
    EXPECT_FALSE(child.recording());
    child.SetAttribute("ignored", true);
    // A sampled remote parent is honoured even when new roots are never sampled.
    Span remote = tracer.StartServerSpan("remote", kW3cExample);
    EXPECT_TRUE(remote.recording());
  }
  auto spans = exporter->spans();
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].name, "remote");
}

TEST(TracerTest, RootSampleRatioIsDecidedByTraceId) {
  Tracer tracer({.exporter = std::make_shared<InMemorySpanExporter>(), .root_sample_ratio = 0.25});
  int sampled = 0;
  constexpr int kN = 4000;
  for (int i = 0; i < kN; ++i) sampled += tracer.StartSpan("s").context().sampled() ? 1 : 0;
  // Binomial(4000, 0.25): mean 1000, sd ~27; the bounds are > 9 sd away.
  EXPECT_GT(sampled, 750);
  EXPECT_LT(sampled, 1250);
}

TEST(TracerTest, StatusEventsAndAttributeLimits) {
  auto exporter = std::make_shared<InMemorySpanExporter>();
  Tracer tracer({.exporter = exporter, .max_attributes = 2, .max_events = 1});
  {
    Span s = tracer.StartSpan("op");
    s.SetAttribute("a", "1");
    s.SetAttribute("b", 2.5);
    s.SetAttribute("a", "replaced");  // replacing does not count against the cap
    s.SetAttribute("c", true);        // dropped
    s.AddEvent("first", {{"n", int64_t{1}}});
    s.AddEvent("second");  // dropped
    s.SetStatus(base::UnavailableError("Backend down"));
    EXPECT_TRUE(s.recording());
    s.End();
    EXPECT_FALSE(s.recording());
    s.End();  // idempotent
    s.SetAttribute("late", 1);
  }
  {
    Span s = tracer.StartSpan("ok-is-final");
    s.SetStatus(SpanStatusCode::kOk, "ignored message");
    s.SetStatus(SpanStatusCode::kError, "too late");
  }
  auto spans = exporter->spans();
  ASSERT_EQ(spans.size(), 2u);
  const SpanData& op = spans[0];
  EXPECT_EQ(op.attributes, (std::vector<Attribute>{{"a", std::string("replaced")}, {"b", 2.5}}));
  EXPECT_EQ(op.dropped_attributes, 1u);
  ASSERT_EQ(op.events.size(), 1u);
  EXPECT_EQ(op.events[0].name, "first");
  EXPECT_EQ(op.dropped_events, 1u);
  EXPECT_EQ(op.status, SpanStatusCode::kError);
  EXPECT_EQ(op.status_message, "unavailable: Backend down");
  EXPECT_EQ(spans[1].status, SpanStatusCode::kOk);
  EXPECT_EQ(spans[1].status_message, "");
}

TEST(TracerTest, MovedSpansEndOnceAndMayOutliveTheTracer) {
  auto exporter = std::make_shared<InMemorySpanExporter>();
  std::optional<Span> kept;
  {
    Tracer tracer({.exporter = exporter});
    Span a = tracer.StartSpan("a");
    Span b = std::move(a);
    EXPECT_FALSE(a.recording());  // NOLINT(bugprone-use-after-move): checking the moved-from state
    b = tracer.StartSpan("c");    // ends "a" (held by b) first
    kept.emplace(std::move(b));
  }
  EXPECT_EQ(exporter->spans().size(), 1u);
  EXPECT_EQ(exporter->spans()[0].name, "a");
  kept.reset();  // the tracer is gone; the span still exports
  ASSERT_EQ(exporter->spans().size(), 2u);
  EXPECT_EQ(exporter->spans()[1].name, "c");
}

TEST(TracerTest, NoExporterStillMakesIds) {
  Tracer tracer;
  Span s = tracer.StartSpan("x");
  EXPECT_TRUE(s.context().valid());
  EXPECT_FALSE(s.recording());
  EXPECT_TRUE(tracer.Flush().ok());
}

// ---- batching -----------------------------------------------------------------------------------

std::vector<SpanData> NamedSpans(int from, int to) {
  std::vector<SpanData> out;
  for (int i = from; i < to; ++i) {
    SpanData d;
    d.name = "s" + std::to_string(i);
    out.push_back(std::move(d));
  }
  return out;
}

TEST(BatchingSpanExporterTest, ExportsInBatchesOnFlush) {
  auto inner = std::make_shared<InMemorySpanExporter>();
  BatchingSpanExporter batching(
      inner,
      {.max_queue_size = 100, .max_batch_size = 3, .flush_interval = std::chrono::milliseconds(0)});
  ASSERT_TRUE(batching.Export(NamedSpans(0, 7)).ok());
  ASSERT_TRUE(batching.Flush().ok());
  auto spans = inner->spans();
  ASSERT_EQ(spans.size(), 7u);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(spans[i].name, "s" + std::to_string(i));
  EXPECT_EQ(inner->export_calls(), 3u);  // 3 + 3 + 1
  EXPECT_EQ(batching.dropped_spans(), 0u);
}

// An exporter that blocks until released, to fill the queue deterministically.
class BlockingExporter : public SpanExporter {
 public:
  base::Status Export(std::vector<SpanData> spans) override {
    entered_.count_down();
    release_.wait();
    std::lock_guard lock(mutex_);
    exported_ += spans.size();
    return fail_ ? base::UnavailableError("Collector down") : base::OkStatus();
  }
  void WaitEntered() { entered_.wait(); }
  void Release() { release_.count_down(); }
  void set_fail(bool f) {
    std::lock_guard lock(mutex_);
    fail_ = f;
  }
  size_t exported() {
    std::lock_guard lock(mutex_);
    return exported_;
  }

 private:
  std::latch entered_{1};
  std::latch release_{1};
  std::mutex mutex_;
  size_t exported_ = 0;
  bool fail_ = false;
};

TEST(BatchingSpanExporterTest, DropsWhenTheQueueIsFullAndReportsErrors) {
  auto inner = std::make_shared<BlockingExporter>();
  inner->set_fail(true);
  BatchingSpanExporter batching(
      inner,
      {.max_queue_size = 4, .max_batch_size = 2, .flush_interval = std::chrono::milliseconds(0)});
  ASSERT_TRUE(batching.Export(NamedSpans(0, 2)).ok());  // a full batch: the worker takes it
  inner->WaitEntered();                                 // ... and is now stuck in the exporter
  ASSERT_TRUE(batching.Export(NamedSpans(2, 6)).ok());  // fills the queue (4)
  auto st = batching.Export(NamedSpans(6, 9));
  EXPECT_EQ(st.code(), base::StatusCode::kResourceExhausted);
  EXPECT_EQ(batching.dropped_spans(), 3u);
  inner->Release();
  EXPECT_EQ(batching.Flush().code(), base::StatusCode::kUnavailable) << "the inner error surfaces";
  EXPECT_EQ(inner->exported(), 6u);
  EXPECT_TRUE(batching.Flush().ok()) << "an error is reported once";
}

TEST(BatchingSpanExporterTest, ShutdownDrainsAndThenRefuses) {
  auto inner = std::make_shared<InMemorySpanExporter>();
  auto batching = std::make_shared<BatchingSpanExporter>(
      inner, BatchingSpanExporterOptions{.max_queue_size = 100,
                                         .max_batch_size = 50,
                                         .flush_interval = std::chrono::milliseconds(0)});
  ASSERT_TRUE(batching->Export(NamedSpans(0, 5)).ok());
  batching->Shutdown();
  EXPECT_EQ(inner->spans().size(), 5u);
  EXPECT_EQ(batching->Export(NamedSpans(5, 6)).code(), base::StatusCode::kUnavailable);
  EXPECT_TRUE(batching->Flush().ok()) << "flush after shutdown returns at once";
  batching->Shutdown();  // idempotent
}

TEST(BatchingSpanExporterTest, IntervalExportsPartialBatchesWithoutFlush) {
  auto inner = std::make_shared<InMemorySpanExporter>();
  BatchingSpanExporter batching(inner, {.max_queue_size = 100,
                                        .max_batch_size = 50,
                                        .flush_interval = std::chrono::milliseconds(5)});
  ASSERT_TRUE(batching.Export(NamedSpans(0, 1)).ok());
  // Poll (no timed assertion: the deadline only prevents a hang).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (inner->spans().empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(inner->spans().size(), 1u);
}

TEST(BatchingSpanExporterTest, ConcurrentTracingThroughTheBatcherLosesNothing) {
  auto inner = std::make_shared<InMemorySpanExporter>();
  auto batching = std::make_shared<BatchingSpanExporter>(
      inner, BatchingSpanExporterOptions{.max_queue_size = 100000, .max_batch_size = 64});
  Tracer tracer({.exporter = batching});
  constexpr int kThreads = 4;
  constexpr int kSpans = 1000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&tracer] {
      for (int i = 0; i < kSpans; ++i) {
        Span s = tracer.StartSpan("work");
        s.SetAttribute("i", i);
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(tracer.Flush().ok());
  auto spans = inner->spans();
  ASSERT_EQ(spans.size(), static_cast<size_t>(kThreads * kSpans));
  std::set<std::string> ids;
  for (const auto& s : spans) ids.insert(s.context.span_id.ToHex());
  EXPECT_EQ(ids.size(), spans.size()) << "span ids are unique";
}

}  // namespace
}  // namespace metald::observe

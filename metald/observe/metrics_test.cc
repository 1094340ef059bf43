#include "metald/observe/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <thread>
#include <vector>

#include "metald/observe/testing/prometheus_text.h"

namespace metald::observe {
namespace {

using testing::Exposition;
using testing::ParsePrometheusText;

Exposition Render(const MetricsRegistry& registry) {
  auto parsed = ParsePrometheusText(registry.RenderPrometheusText());
  EXPECT_TRUE(parsed.ok()) << parsed.status().ToString() << "\n" << registry.RenderPrometheusText();
  return parsed.ok() ? *parsed : Exposition{};
}

TEST(MetricsRegistryTest, RendersCountersGaugesAndHistogramsWithHelpAndType) {
  MetricsRegistry registry;
  auto boots = registry.AddCounter("metald_vm_boots_total", "VM boots.", {"backend", "result"});
  ASSERT_TRUE(boots.ok()) << boots.status().ToString();
  auto vms = registry.AddGauge("metald_vms", "VMs by state.", {"state"});
  ASSERT_TRUE(vms.ok());
  auto boot_time = registry.AddHistogram("metald_vm_boot_seconds", "Boot time.", {}, {0.5, 1, 2});
  ASSERT_TRUE(boot_time.ok());

  boots->WithLabels({"qemu", "ok"}).Increment();
  boots->WithLabels({"qemu", "ok"}).Increment(2);
  boots->WithLabels({"qemu", "error"}).Increment();
  vms->WithLabels({"running"}).Set(3);
  vms->WithLabels({"paused"}).Set(1);
  vms->WithLabels({"paused"}).Decrement();
  Histogram h = boot_time->WithLabels();
  for (double v : {0.2, 0.7, 1.5, 1.9, 5.0}) h.Observe(v);
  EXPECT_EQ(h.count(), 5u);
  EXPECT_DOUBLE_EQ(h.sum(), 9.3);

  Exposition e = Render(registry);
  EXPECT_EQ(e.type["metald_vm_boots_total"], "counter");
  EXPECT_EQ(e.help["metald_vm_boots_total"], "VM boots.");
  EXPECT_EQ(e.type["metald_vms"], "gauge");
  EXPECT_EQ(e.type["metald_vm_boot_seconds"], "histogram");
  EXPECT_EQ(e.help["metald_vm_boot_seconds"], "Boot time.");
  EXPECT_EQ(e.Value("metald_vm_boots_total", {{"backend", "qemu"}, {"result", "ok"}}), 3);
  EXPECT_EQ(e.Value("metald_vm_boots_total", {{"backend", "qemu"}, {"result", "error"}}), 1);
  EXPECT_EQ(e.Value("metald_vms", {{"state", "running"}}), 3);
  EXPECT_EQ(e.Value("metald_vms", {{"state", "paused"}}), 0);
  // Buckets are cumulative and end with +Inf.
  EXPECT_EQ(e.Value("metald_vm_boot_seconds_bucket", {{"le", "0.5"}}), 1);
  EXPECT_EQ(e.Value("metald_vm_boot_seconds_bucket", {{"le", "1"}}), 2);
  EXPECT_EQ(e.Value("metald_vm_boot_seconds_bucket", {{"le", "2"}}), 4);
  EXPECT_EQ(e.Value("metald_vm_boot_seconds_bucket", {{"le", "+Inf"}}), 5);
  EXPECT_EQ(e.Value("metald_vm_boot_seconds_count"), 5);
  EXPECT_DOUBLE_EQ(*e.Value("metald_vm_boot_seconds_sum"), 9.3);
}

TEST(MetricsRegistryTest, OutputIsSortedByFamilyName) {
  MetricsRegistry registry;
  auto z = registry.AddGauge("zz_gauge", "z.");
  auto a = registry.AddCounter("aa_total", "a.");
  auto m = registry.AddHistogram("mm_seconds", "m.", {}, {1});
  ASSERT_TRUE(z.ok() && a.ok() && m.ok());
  ASSERT_TRUE(registry.AddGauge("empty_gauge", "No series.").ok());
  z->WithLabels().Set(1);
  a->WithLabels().Increment();
  m->WithLabels().Observe(0.5);
  registry.AddCollector([] {
    return std::vector<CollectedSample>{{"bb_collected", "b.", MetricKind::kGauge, {}, 1}};
  });
  const std::string text = registry.RenderPrometheusText();
  const size_t a_pos = text.find("# TYPE aa_total");
  const size_t b_pos = text.find("# TYPE bb_collected");
  const size_t m_pos = text.find("# TYPE mm_seconds");
  const size_t z_pos = text.find("# TYPE zz_gauge");
  ASSERT_NE(z_pos, std::string::npos) << text;
  EXPECT_LT(a_pos, b_pos);
  EXPECT_LT(b_pos, m_pos);
  EXPECT_LT(m_pos, z_pos);
  // A family with no series yet is not rendered (prometheus-cpp behaviour, like client_golang).
  EXPECT_EQ(text.find("empty_gauge"), std::string::npos);
}

TEST(MetricsRegistryTest, LabelValuesAreEscaped) {
  MetricsRegistry registry;
  auto c = registry.AddCounter("weird_total", "Help with \\ and\nnewline.", {"v"});
  ASSERT_TRUE(c.ok());
  const std::string nasty = "a\"b\\c\nd";
  c->WithLabels({nasty}).Increment();
  const std::string text = registry.RenderPrometheusText();
  EXPECT_NE(text.find(R"(weird_total{v="a\"b\\c\nd"} 1)"), std::string::npos) << text;
  Exposition e = Render(registry);
  EXPECT_EQ(e.Value("weird_total", {{"v", nasty}}), 1);
  EXPECT_EQ(e.help["weird_total"], "Help with \\ and\nnewline.");
}

TEST(MetricsRegistryTest, RejectsInvalidDefinitions) {
  MetricsRegistry registry;
  auto code = [](const auto& r) { return r.status().code(); };
  using base::StatusCode;
  EXPECT_EQ(code(registry.AddCounter("1bad", "h")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(registry.AddCounter("bad-name", "h")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(registry.AddCounter("", "h")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(registry.AddCounter("ok_total", "")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(registry.AddCounter("ok_total", "h", {"__reserved"})),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(registry.AddCounter("ok_total", "h", {"a:b"})), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(registry.AddCounter("ok_total", "h", {"x", "x"})), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(registry.AddHistogram("h_seconds", "h", {"le"}, {1})),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(registry.AddHistogram("h_seconds", "h", {}, {})), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(registry.AddHistogram("h_seconds", "h", {}, {2, 1})),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(registry.AddHistogram("h_seconds", "h", {}, {1, INFINITY})),
            StatusCode::kInvalidArgument);
  // "le" is fine outside histograms; colons are fine in metric names.
  EXPECT_TRUE(registry.AddGauge("ns:ok", "h", {"le"}).ok());
}

TEST(MetricsRegistryTest, ReRegistrationIsIdempotentOnlyWhenIdentical) {
  MetricsRegistry registry;
  auto first = registry.AddCounter("x_total", "X.", {"a"});
  ASSERT_TRUE(first.ok());
  auto again = registry.AddCounter("x_total", "X.", {"a"});
  ASSERT_TRUE(again.ok());
  first->WithLabels({"1"}).Increment();
  again->WithLabels({"1"}).Increment();
  EXPECT_EQ(first->WithLabels({"1"}).Value(), 2);

  EXPECT_EQ(registry.AddCounter("x_total", "X.", {"b"}).status().code(),
            base::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.AddGauge("x_total", "X.", {"a"}).status().code(),
            base::StatusCode::kAlreadyExists);
  ASSERT_TRUE(registry.AddHistogram("y_seconds", "Y.", {}, {1, 2}).ok());
  EXPECT_TRUE(registry.AddHistogram("y_seconds", "Y.", {}, {1, 2}).ok());
  EXPECT_EQ(registry.AddHistogram("y_seconds", "Y.", {}, {1, 3}).status().code(),
            base::StatusCode::kAlreadyExists);
}

TEST(MetricsRegistryTest, CounterIgnoresNegativeAndNaNIncrements) {
  MetricsRegistry registry;
  auto c = registry.AddCounter("c_total", "C.");
  ASSERT_TRUE(c.ok());
  Counter counter = c->WithLabels();
  counter.Increment(2);
  counter.Increment(-1);
  counter.Increment(std::nan(""));
  EXPECT_EQ(counter.Value(), 2);
}

TEST(MetricsRegistryTest, CollectorsRunAtScrapeTimeAndCannotShadowFamilies) {
  MetricsRegistry registry;
  ASSERT_TRUE(registry.AddGauge("taken", "Registered.").ok());
  int calls = 0;
  registry.AddCollector([&calls] {
    ++calls;
    return std::vector<CollectedSample>{
        {"scrapes_total", "Scrapes.", MetricKind::kCounter, {}, static_cast<double>(calls)},
        {"queue_depth", "Depth.", MetricKind::kGauge, {{"queue", "b"}}, 7},
        {"queue_depth", "", MetricKind::kGauge, {{"queue", "a"}}, 5},
        {"queue_depth", "", MetricKind::kCounter, {{"queue", "c"}}, 1},  // type clash: dropped
        {"taken", "Shadow.", MetricKind::kGauge, {}, 99},                // shadow: dropped
        {"bad-name", "Bad.", MetricKind::kGauge, {}, 1},                 // invalid: dropped
        {"bad_label", "Bad.", MetricKind::kGauge, {{"0x", "v"}}, 1},     // invalid: dropped
    };
  });
  Exposition e = Render(registry);
  EXPECT_EQ(e.Value("scrapes_total"), 1);
  EXPECT_EQ(e.type["scrapes_total"], "counter");
  EXPECT_EQ(e.Value("queue_depth", {{"queue", "a"}}), 5);
  EXPECT_EQ(e.Value("queue_depth", {{"queue", "b"}}), 7);
  EXPECT_FALSE(e.Value("queue_depth", {{"queue", "c"}}).has_value());
  EXPECT_EQ(e.help["queue_depth"], "Depth.");
  EXPECT_FALSE(e.help.contains("taken")) << "registered family has no series yet";
  EXPECT_FALSE(e.Value("taken").has_value()) << "the collector's sample must be dropped";
  EXPECT_FALSE(e.type.contains("bad_label"));
  e = Render(registry);
  EXPECT_EQ(e.Value("scrapes_total"), 2);
}

TEST(MetricsRegistryTest, ConcurrentUpdatesAndScrapesAreConsistent) {
  MetricsRegistry registry;
  auto c = registry.AddCounter("hits_total", "Hits.", {"worker"});
  auto h = registry.AddHistogram("lat_seconds", "Latency.", {}, DefaultLatencyBuckets());
  ASSERT_TRUE(c.ok() && h.ok());
  constexpr int kThreads = 4;
  constexpr int kIters = 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIters; ++i) {
        c->WithLabels({i % 2 == 0 ? "even" : "odd"}).Increment();
        h->WithLabels().ObserveDuration(std::chrono::milliseconds(t + 1));
      }
    });
  }
  std::thread scraper([&] {
    for (int i = 0; i < 20; ++i) {
      auto parsed = ParsePrometheusText(registry.RenderPrometheusText());
      EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
    }
  });
  for (auto& th : threads) th.join();
  scraper.join();
  Exposition e = Render(registry);
  EXPECT_EQ(e.Value("hits_total", {{"worker", "even"}}), kThreads * kIters / 2);
  EXPECT_EQ(e.Value("hits_total", {{"worker", "odd"}}), kThreads * kIters / 2);
  EXPECT_EQ(e.Value("lat_seconds_count"), kThreads * kIters);
  EXPECT_EQ(e.Value("lat_seconds_bucket", {{"le", "0.001"}}), kIters);  // only t == 0 (1 ms)
}

TEST(MetricsBucketsTest, Helpers) {
  EXPECT_EQ(ExponentialBuckets(0.001, 10, 4), (std::vector<double>{0.001, 0.01, 0.1, 1}));
  auto d = DefaultLatencyBuckets();
  ASSERT_FALSE(d.empty());
  for (size_t i = 1; i < d.size(); ++i) EXPECT_LT(d[i - 1], d[i]);
}

TEST(MetricsDeathTest, LabelCountMismatchAborts) {
  MetricsRegistry registry;
  auto c = registry.AddCounter("m_total", "M.", {"a", "b"});
  ASSERT_TRUE(c.ok());
  EXPECT_DEATH(c->WithLabels({"only-one"}), "METALD_CHECK");
}

TEST(PrometheusTextParserTest, RejectsMalformedExpositions) {
  EXPECT_FALSE(ParsePrometheusText("x 1\n").ok()) << "sample without TYPE";
  EXPECT_FALSE(ParsePrometheusText("# TYPE x gauge\nx{a=\"1} 1\n").ok());
  EXPECT_FALSE(ParsePrometheusText("# TYPE x gauge\nx{a=\"\\q\"} 1\n").ok());
  EXPECT_FALSE(ParsePrometheusText("# TYPE x gauge\nx one\n").ok());
  EXPECT_FALSE(ParsePrometheusText("# TYPE x gauge\nx 1\nx 2\n").ok()) << "duplicate series";
  EXPECT_FALSE(ParsePrometheusText("# TYPE x gauge\nx 1\n# TYPE x gauge\n").ok());
  EXPECT_FALSE(ParsePrometheusText("# TYPE x bogus\n").ok());
  auto ok = ParsePrometheusText("# HELP x X.\n# TYPE x gauge\nx{a=\"1\",b=\"2\"} 1.5 123\n");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->Value("x", {{"a", "1"}, {"b", "2"}}), 1.5);
}

}  // namespace
}  // namespace metald::observe

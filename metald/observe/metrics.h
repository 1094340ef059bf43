#pragma once
// Metrics: a thin facade over prometheus-cpp core. A MetricsRegistry holds counter, gauge and
// histogram families with declared label names, plus collectors evaluated at scrape time (process
// metrics), and renders everything in the Prometheus text exposition format, so any HTTP layer can
// serve GET /metrics with RenderPrometheusText() and kPrometheusContentType.
//
//   ASSIGN_OR_RETURN(auto vms, registry.AddGauge("metald_vms", "VMs by state.", {"state"}));
//   vms.WithLabels({"running"}).Set(3);
//
// Concurrency model: everything here is thread-safe. Registration takes the registry's mutex;
// updating a metric through a handle is lock-free (prometheus-cpp atomics); WithLabels() takes the
// family's mutex, so hot paths keep the handle. Rendering reads a consistent snapshot per series.
// Lifetime: handles (Counter, CounterFamily, ...) point into the registry and are valid as long as
// the MetricsRegistry that made them lives. prometheus-cpp types never appear in this header.
//
// Naming (style.md rule 4): metald_<component>_<what>[_<unit>][_total], snake_case; per-RPC series
// use a `method` label ("boot_vm"), not one metric name per method (see rpc_metrics.h).

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "metald/base/status.h"

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace metald::observe {

// Content-Type of RenderPrometheusText() output (text exposition format 0.0.4).
inline constexpr std::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

// Label values in the order of the family's label names.
using LabelValues = std::initializer_list<std::string_view>;

// A monotonically increasing value. Cheap to copy; thread-safe.
class Counter {
 public:
  // Adds `by`. REQUIRES: by >= 0 (a negative or NaN amount is ignored, as prometheus-cpp does).
  void Increment(double by = 1.0) const;
  double Value() const;

 private:
  friend class CounterFamily;
  explicit Counter(prometheus::Counter* c) : c_(c) {}
  prometheus::Counter* c_;  // owned by the registry; never null
};

// A value that goes up and down. Cheap to copy; thread-safe.
class Gauge {
 public:
  void Set(double value) const;
  void Increment(double by = 1.0) const;
  void Decrement(double by = 1.0) const;
  double Value() const;

 private:
  friend class GaugeFamily;
  explicit Gauge(prometheus::Gauge* g) : g_(g) {}
  prometheus::Gauge* g_;  // owned by the registry; never null
};

// Observations counted into fixed buckets, with their sum and count. Cheap to copy; thread-safe.
class Histogram {
 public:
  void Observe(double value) const;
  // Observes a duration in seconds (the unit Prometheus expects).
  void ObserveDuration(std::chrono::nanoseconds d) const {
    Observe(std::chrono::duration<double>(d).count());
  }
  // Number of observations and their sum so far (for tests and debugging).
  uint64_t count() const;
  double sum() const;

 private:
  friend class HistogramFamily;
  explicit Histogram(prometheus::Histogram* h) : h_(h) {}
  prometheus::Histogram* h_;  // owned by the registry; never null
};

// A metric name with declared label names; WithLabels() returns (creating on first use) the series
// for one combination of label values. Cheap to copy; thread-safe.
class CounterFamily {
 public:
  // REQUIRES: values.size() == label_names().size() (checked: a mismatch is a programming error
  // and aborts). Label values may be any UTF-8 text.
  Counter WithLabels(LabelValues values = {}) const;
  const std::vector<std::string>& label_names() const { return *label_names_; }

 private:
  friend class MetricsRegistry;
  CounterFamily(prometheus::Family<prometheus::Counter>* f,
                std::shared_ptr<const std::vector<std::string>> names)
      : family_(f), label_names_(std::move(names)) {}
  prometheus::Family<prometheus::Counter>* family_;
  std::shared_ptr<const std::vector<std::string>> label_names_;
};

class GaugeFamily {
 public:
  // REQUIRES: values.size() == label_names().size() (checked).
  Gauge WithLabels(LabelValues values = {}) const;
  const std::vector<std::string>& label_names() const { return *label_names_; }

 private:
  friend class MetricsRegistry;
  GaugeFamily(prometheus::Family<prometheus::Gauge>* f,
              std::shared_ptr<const std::vector<std::string>> names)
      : family_(f), label_names_(std::move(names)) {}
  prometheus::Family<prometheus::Gauge>* family_;
  std::shared_ptr<const std::vector<std::string>> label_names_;
};

class HistogramFamily {
 public:
  // REQUIRES: values.size() == label_names().size() (checked).
  Histogram WithLabels(LabelValues values = {}) const;
  const std::vector<std::string>& label_names() const { return *label_names_; }
  const std::vector<double>& buckets() const { return *buckets_; }

 private:
  friend class MetricsRegistry;
  HistogramFamily(prometheus::Family<prometheus::Histogram>* f,
                  std::shared_ptr<const std::vector<std::string>> names,
                  std::shared_ptr<const std::vector<double>> buckets)
      : family_(f), label_names_(std::move(names)), buckets_(std::move(buckets)) {}
  prometheus::Family<prometheus::Histogram>* family_;
  std::shared_ptr<const std::vector<std::string>> label_names_;
  std::shared_ptr<const std::vector<double>> buckets_;
};

// Latency buckets in seconds, 1 ms to 60 s: 0.001 .. 60 (VM operations are slow; RPCs are fast).
std::vector<double> DefaultLatencyBuckets();
// `count` buckets: start, start*factor, ... REQUIRES: start > 0, factor > 1, count >= 1.
std::vector<double> ExponentialBuckets(double start, double factor, int count);

enum class MetricKind { kCounter, kGauge };

// One sample produced by a collector at scrape time.
struct CollectedSample {
  std::string name;  // must be a valid metric name, else the sample is dropped
  std::string help;  // the first sample of a name supplies the family's HELP
  MetricKind kind = MetricKind::kGauge;
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;
};

// Called on every RenderPrometheusText(); must be thread-safe and fast (it runs on the scraping
// thread) and must not call back into the registry.
using Collector = std::function<std::vector<CollectedSample>()>;

// Thread-safe; see the file comment.
class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Registers (or, when an identical family already exists, returns) a family.
  // Errors: invalid_argument for a bad metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), a bad or duplicate
  // label name ([a-zA-Z_][a-zA-Z0-9_]*, not "__"-prefixed; "le" is reserved for histograms), empty
  // help, or (histograms) buckets that are empty, not finite or not strictly increasing;
  // already_exists when the name is taken with another kind, labels or buckets.
  base::Result<CounterFamily> AddCounter(std::string name, std::string help,
                                         std::vector<std::string> label_names = {});
  base::Result<GaugeFamily> AddGauge(std::string name, std::string help,
                                     std::vector<std::string> label_names = {});
  base::Result<HistogramFamily> AddHistogram(std::string name, std::string help,
                                             std::vector<std::string> label_names,
                                             std::vector<double> buckets);

  // Adds a scrape-time collector. A collected sample whose name is invalid or already taken by a
  // registered family is dropped (the registered family wins).
  void AddCollector(Collector collector);

  // The whole registry in the text exposition format: families sorted by name, each with its
  // # HELP and # TYPE lines; a family with no series yet is omitted. Thread-safe; runs the
  // collectors.
  std::string RenderPrometheusText() const;

 private:
  enum class FamilyType { kCounter, kGauge, kHistogram };
  struct Entry {
    FamilyType type;
    std::shared_ptr<const std::vector<std::string>> label_names;
    std::shared_ptr<const std::vector<double>> buckets;  // histograms only
    void* family;                                        // prometheus::Family<T>*
  };
  // Validates and looks up `name`. Returns the existing entry (or nullptr when free) or an error.
  // REQUIRES: mutex_ held.
  base::Result<const Entry*> CheckNew(const std::string& name, const std::string& help,
                                      const std::vector<std::string>& label_names, FamilyType type,
                                      const std::vector<double>* buckets) const;

  // Constant after construction (the prometheus registry is itself thread-safe).
  const std::unique_ptr<prometheus::Registry> registry_;

  mutable std::mutex mutex_;
  std::map<std::string, Entry, std::less<>> entries_;  // guarded by mutex_
  std::vector<Collector> collectors_;                  // guarded by mutex_
};

}  // namespace metald::observe

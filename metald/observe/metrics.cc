#include "metald/observe/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <set>

#include "metald/base/check.h"

namespace metald::observe {
namespace {

bool IsMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool IsLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// prometheus-cpp 1.0 writes HELP verbatim; the format requires '\\' and '\n' escaped there.
std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

prometheus::Labels MakeLabels(const std::vector<std::string>& names, LabelValues values) {
  METALD_CHECK(values.size() == names.size());
  prometheus::Labels labels;
  auto it = values.begin();
  for (const std::string& n : names) labels.emplace(n, std::string(*it++));
  return labels;
}

}  // namespace

void Counter::Increment(double by) const {
  if (!(by >= 0)) return;  // also rejects NaN
  c_->Increment(by);
}
double Counter::Value() const { return c_->Value(); }

void Gauge::Set(double value) const { g_->Set(value); }
void Gauge::Increment(double by) const { g_->Increment(by); }
void Gauge::Decrement(double by) const { g_->Decrement(by); }
double Gauge::Value() const { return g_->Value(); }

void Histogram::Observe(double value) const { h_->Observe(value); }
uint64_t Histogram::count() const { return h_->Collect().histogram.sample_count; }
double Histogram::sum() const { return h_->Collect().histogram.sample_sum; }

Counter CounterFamily::WithLabels(LabelValues values) const {
  return Counter(&family_->Add(MakeLabels(*label_names_, values)));
}

Gauge GaugeFamily::WithLabels(LabelValues values) const {
  return Gauge(&family_->Add(MakeLabels(*label_names_, values)));
}

Histogram HistogramFamily::WithLabels(LabelValues values) const {
  // Add() returns the existing series for known labels and only builds a new one otherwise.
  return Histogram(&family_->Add(MakeLabels(*label_names_, values),
                                 prometheus::Histogram::BucketBoundaries(*buckets_)));
}

std::vector<double> DefaultLatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> out;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) out.push_back(v);
  return out;
}

MetricsRegistry::MetricsRegistry() : registry_(std::make_unique<prometheus::Registry>()) {}
MetricsRegistry::~MetricsRegistry() = default;

base::Result<const MetricsRegistry::Entry*> MetricsRegistry::CheckNew(
    const std::string& name, const std::string& help, const std::vector<std::string>& label_names,
    FamilyType type, const std::vector<double>* buckets) const {
  if (!IsMetricName(name))
    return base::InvalidArgumentError("Invalid metric name \"" + name + "\"");
  if (help.empty()) return base::InvalidArgumentError("Metric " + name + " needs a help text");
  std::set<std::string_view> seen;
  for (const std::string& l : label_names) {
    if (!IsLabelName(l)) {
      return base::InvalidArgumentError("Metric " + name + ": invalid label name \"" + l + "\"");
    }
    if (type == FamilyType::kHistogram && l == "le") {
      return base::InvalidArgumentError("Metric " + name + ": label \"le\" is reserved");
    }
    if (!seen.insert(l).second) {
      return base::InvalidArgumentError("Metric " + name + ": duplicate label \"" + l + "\"");
    }
  }
  if (buckets != nullptr) {
    if (buckets->empty()) return base::InvalidArgumentError("Metric " + name + ": no buckets");
    for (size_t i = 0; i < buckets->size(); ++i) {
      if (!std::isfinite((*buckets)[i]) || (i > 0 && (*buckets)[i] <= (*buckets)[i - 1])) {
        return base::InvalidArgumentError("Metric " + name +
                                          ": buckets must be finite and strictly increasing");
      }
    }
  }
  auto it = entries_.find(name);
  if (it == entries_.end()) return static_cast<const Entry*>(nullptr);
  const Entry& e = it->second;
  if (e.type != type || *e.label_names != label_names ||
      (buckets != nullptr && *e.buckets != *buckets)) {
    return base::AlreadyExistsError("Metric " + name +
                                    " is already registered with another type, labels or buckets");
  }
  return &e;
}

base::Result<CounterFamily> MetricsRegistry::AddCounter(std::string name, std::string help,
                                                        std::vector<std::string> label_names) {
  std::lock_guard lock(mutex_);
  ASSIGN_OR_RETURN(const Entry* existing,
                   CheckNew(name, help, label_names, FamilyType::kCounter, nullptr));
  if (existing != nullptr) {
    return CounterFamily(static_cast<prometheus::Family<prometheus::Counter>*>(existing->family),
                         existing->label_names);
  }
  prometheus::Family<prometheus::Counter>* family;
  try {
    family = &prometheus::BuildCounter().Name(name).Help(EscapeHelp(help)).Register(*registry_);
  } catch (const std::exception& e) {
    return base::InvalidArgumentError("Metric " + name + ": " + e.what());
  }
  auto names = std::make_shared<const std::vector<std::string>>(std::move(label_names));
  entries_.emplace(name, Entry{FamilyType::kCounter, names, nullptr, family});
  return CounterFamily(family, names);
}

base::Result<GaugeFamily> MetricsRegistry::AddGauge(std::string name, std::string help,
                                                    std::vector<std::string> label_names) {
  std::lock_guard lock(mutex_);
  ASSIGN_OR_RETURN(const Entry* existing,
                   CheckNew(name, help, label_names, FamilyType::kGauge, nullptr));
  if (existing != nullptr) {
    return GaugeFamily(static_cast<prometheus::Family<prometheus::Gauge>*>(existing->family),
                       existing->label_names);
  }
  prometheus::Family<prometheus::Gauge>* family;
  try {
    family = &prometheus::BuildGauge().Name(name).Help(EscapeHelp(help)).Register(*registry_);
  } catch (const std::exception& e) {
    return base::InvalidArgumentError("Metric " + name + ": " + e.what());
  }
  auto names = std::make_shared<const std::vector<std::string>>(std::move(label_names));
  entries_.emplace(name, Entry{FamilyType::kGauge, names, nullptr, family});
  return GaugeFamily(family, names);
}

base::Result<HistogramFamily> MetricsRegistry::AddHistogram(std::string name, std::string help,
                                                            std::vector<std::string> label_names,
                                                            std::vector<double> buckets) {
  std::lock_guard lock(mutex_);
  ASSIGN_OR_RETURN(const Entry* existing,
                   CheckNew(name, help, label_names, FamilyType::kHistogram, &buckets));
  if (existing != nullptr) {
    return HistogramFamily(
        static_cast<prometheus::Family<prometheus::Histogram>*>(existing->family),
        existing->label_names, existing->buckets);
  }
  prometheus::Family<prometheus::Histogram>* family;
  try {
    family = &prometheus::BuildHistogram().Name(name).Help(EscapeHelp(help)).Register(*registry_);
  } catch (const std::exception& e) {
    return base::InvalidArgumentError("Metric " + name + ": " + e.what());
  }
  auto names = std::make_shared<const std::vector<std::string>>(std::move(label_names));
  auto bounds = std::make_shared<const std::vector<double>>(std::move(buckets));
  entries_.emplace(name, Entry{FamilyType::kHistogram, names, bounds, family});
  return HistogramFamily(family, names, bounds);
}

void MetricsRegistry::AddCollector(Collector collector) {
  std::lock_guard lock(mutex_);
  collectors_.push_back(std::move(collector));
}

std::string MetricsRegistry::RenderPrometheusText() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  std::vector<Collector> collectors;
  // Registered names, including families without series (prometheus-cpp omits those).
  std::set<std::string, std::less<>> taken;
  {
    std::lock_guard lock(mutex_);
    collectors = collectors_;
    for (const auto& [name, entry] : entries_) taken.insert(name);
  }
  // Collectors run without the lock, so a slow one never blocks registration.
  std::map<std::string, prometheus::MetricFamily, std::less<>> collected;
  for (const Collector& collector : collectors) {
    for (CollectedSample& s : collector()) {
      if (!IsMetricName(s.name) || taken.contains(s.name)) continue;
      bool labels_ok = true;
      for (const auto& [k, v] : s.labels) labels_ok = labels_ok && IsLabelName(k);
      if (!labels_ok) continue;
      auto [it, inserted] = collected.try_emplace(s.name);
      prometheus::MetricFamily& fam = it->second;
      const auto type = s.kind == MetricKind::kCounter ? prometheus::MetricType::Counter
                                                       : prometheus::MetricType::Gauge;
      if (inserted) {
        fam.name = s.name;
        fam.help = EscapeHelp(s.help);
        fam.type = type;
      } else if (fam.type != type) {
        continue;  // one name, one type
      }
      prometheus::ClientMetric m;
      for (auto& [k, v] : s.labels) m.label.push_back({std::move(k), std::move(v)});
      std::sort(m.label.begin(), m.label.end());
      if (type == prometheus::MetricType::Counter) {
        m.counter.value = s.value;
      } else {
        m.gauge.value = s.value;
      }
      fam.metric.push_back(std::move(m));
    }
  }
  for (auto& [name, fam] : collected) families.push_back(std::move(fam));
  std::sort(families.begin(), families.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace metald::observe

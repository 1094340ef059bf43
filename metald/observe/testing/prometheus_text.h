#pragma once
// A strict parser for the Prometheus text exposition format (0.0.4), for tests that check what
// /metrics serves. Test-only (metald_observe_testing). Thread-compatible value types.

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "metald/base/status.h"

namespace metald::observe::testing {

using Labels = std::map<std::string, std::string>;

struct Sample {
  std::string name;  // e.g. "metald_rpc_request_duration_seconds_bucket"
  Labels labels;     // unescaped values
  double value = 0;
};

struct Exposition {
  std::map<std::string, std::string> help;  // family name -> unescaped HELP text
  std::map<std::string, std::string> type;  // family name -> "counter", "gauge", "histogram", ...
  std::vector<Sample> samples;              // in document order

  // The value of the sample with exactly this name and label set.
  std::optional<double> Value(std::string_view name, const Labels& labels = {}) const;
  // Samples named `name`, any labels.
  std::vector<Sample> Find(std::string_view name) const;
};

// Errors (invalid_argument, naming the line): malformed comment, sample or label syntax, bad
// escapes, an unparsable value, a duplicate TYPE or HELP line, a TYPE after the family's first
// sample, a sample whose family (name minus _bucket/_sum/_count/_total suffixes) has no TYPE, or
// a duplicate series.
base::Result<Exposition> ParsePrometheusText(std::string_view text);

}  // namespace metald::observe::testing

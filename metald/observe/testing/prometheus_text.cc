#include "metald/observe/testing/prometheus_text.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>
#include <utility>

namespace metald::observe::testing {
namespace {

bool IsNameChar(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

size_t NameLength(std::string_view s) {
  size_t n = 0;
  while (n < s.size() && IsNameChar(s[n], n == 0)) ++n;
  return n;
}

bool ParseValue(std::string_view s, double& out) {
  if (s == "+Inf" || s == "Inf") {
    out = std::numeric_limits<double>::infinity();
    return true;
  }
  if (s == "-Inf") {
    out = -std::numeric_limits<double>::infinity();
    return true;
  }
  if (s == "NaN") {
    out = std::nan("");
    return true;
  }
  std::string copy(s);
  char* end = nullptr;
  out = std::strtod(copy.c_str(), &end);
  return !copy.empty() && end == copy.c_str() + copy.size();
}

// Unescapes \\, \n and (when quote_ok) \" ; anything else after a backslash is an error.
bool Unescape(std::string_view s, bool quote_ok, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out.push_back(s[i]);
      continue;
    }
    if (++i == s.size()) return false;
    if (s[i] == '\\') {
      out.push_back('\\');
    } else if (s[i] == 'n') {
      out.push_back('\n');
    } else if (s[i] == '"' && quote_ok) {
      out.push_back('"');
    } else {
      return false;
    }
  }
  return true;
}

std::string FamilyOf(const std::string& sample_name,
                     const std::map<std::string, std::string>& types) {
  if (types.contains(sample_name)) return sample_name;
  for (std::string_view suffix : {"_bucket", "_sum", "_count", "_total"}) {
    if (sample_name.size() > suffix.size() && sample_name.ends_with(suffix)) {
      std::string base = sample_name.substr(0, sample_name.size() - suffix.size());
      if (types.contains(base)) return base;
    }
  }
  return "";
}

}  // namespace

std::optional<double> Exposition::Value(std::string_view name, const Labels& labels) const {
  for (const Sample& s : samples) {
    if (s.name == name && s.labels == labels) return s.value;
  }
  return std::nullopt;
}

std::vector<Sample> Exposition::Find(std::string_view name) const {
  std::vector<Sample> out;
  for (const Sample& s : samples) {
    if (s.name == name) out.push_back(s);
  }
  return out;
}

base::Result<Exposition> ParsePrometheusText(std::string_view text) {
  Exposition exp;
  std::set<std::string> families_with_samples;
  std::set<std::pair<std::string, Labels>> series;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    auto fail = [line_no, line](std::string_view why) {
      return base::InvalidArgumentError("Line " + std::to_string(line_no) + ": " +
                                        std::string(why) + ": " + std::string(line));
    };
    if (line.empty()) continue;
    if (line[0] == '#') {
      const bool is_help = line.starts_with("# HELP ");
      const bool is_type = line.starts_with("# TYPE ");
      if (!is_help && !is_type) continue;  // plain comment
      std::string_view rest = line.substr(7);
      const size_t n = NameLength(rest);
      if (n == 0 || (n < rest.size() && rest[n] != ' ')) return fail("bad metric name");
      std::string name(rest.substr(0, n));
      std::string_view arg = n < rest.size() ? rest.substr(n + 1) : std::string_view();
      if (is_help) {
        std::string help;
        if (!Unescape(arg, /*quote_ok=*/false, help)) return fail("bad escape in HELP");
        if (!exp.help.emplace(name, help).second) return fail("duplicate HELP");
      } else {
        static const std::set<std::string_view> kTypes = {"counter", "gauge", "histogram",
                                                          "summary", "untyped"};
        if (!kTypes.contains(arg)) return fail("unknown TYPE");
        if (families_with_samples.contains(name)) return fail("TYPE after samples");
        if (!exp.type.emplace(name, std::string(arg)).second) return fail("duplicate TYPE");
      }
      continue;
    }
    Sample s;
    const size_t n = NameLength(line);
    if (n == 0) return fail("bad sample name");
    s.name = std::string(line.substr(0, n));
    std::string_view rest = line.substr(n);
    if (!rest.empty() && rest[0] == '{') {
      rest.remove_prefix(1);
      while (true) {
        if (!rest.empty() && rest[0] == '}') {
          rest.remove_prefix(1);
          break;
        }
        const size_t ln = NameLength(rest);
        if (ln == 0 || ln + 1 >= rest.size() || rest[ln] != '=' || rest[ln + 1] != '"') {
          return fail("bad label");
        }
        std::string label(rest.substr(0, ln));
        rest.remove_prefix(ln + 2);
        size_t end = 0;
        while (end < rest.size() && rest[end] != '"') end += rest[end] == '\\' ? 2 : 1;
        if (end >= rest.size()) return fail("unterminated label value");
        std::string value;
        if (!Unescape(rest.substr(0, end), /*quote_ok=*/true, value)) return fail("bad escape");
        if (!s.labels.emplace(label, value).second) return fail("duplicate label");
        rest.remove_prefix(end + 1);
        if (!rest.empty() && rest[0] == ',') rest.remove_prefix(1);
      }
    }
    if (rest.empty() || rest[0] != ' ') return fail("missing value");
    rest.remove_prefix(1);
    // An optional timestamp may follow the value.
    const size_t sp = rest.find(' ');
    if (!ParseValue(rest.substr(0, sp), s.value)) return fail("bad value");
    const std::string family = FamilyOf(s.name, exp.type);
    if (family.empty()) return fail("sample without TYPE");
    families_with_samples.insert(family);
    if (!series.emplace(s.name, s.labels).second) return fail("duplicate series");
    exp.samples.push_back(std::move(s));
  }
  return exp;
}

}  // namespace metald::observe::testing

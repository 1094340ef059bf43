#include "metald/rpc/metadata.h"

namespace metald::rpc {

std::string AsciiLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool AsciiIEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

Metadata::Metadata(std::initializer_list<Entry> entries) {
  for (const auto& [k, v] : entries) Add(k, v);
}

void Metadata::Add(std::string_view name, std::string_view value) {
  entries_.emplace_back(AsciiLower(name), std::string(value));
}

void Metadata::Set(std::string_view name, std::string_view value) {
  Remove(name);
  Add(name, value);
}

size_t Metadata::Remove(std::string_view name) {
  size_t before = entries_.size();
  std::erase_if(entries_, [&](const Entry& e) { return AsciiIEquals(e.first, name); });
  return before - entries_.size();
}

std::optional<std::string_view> Metadata::Get(std::string_view name) const {
  for (const auto& e : entries_) {
    if (AsciiIEquals(e.first, name)) return std::string_view(e.second);
  }
  return std::nullopt;
}

std::vector<std::string_view> Metadata::GetAll(std::string_view name) const {
  std::vector<std::string_view> out;
  for (const auto& e : entries_) {
    if (AsciiIEquals(e.first, name)) out.emplace_back(e.second);
  }
  return out;
}

}  // namespace metald::rpc

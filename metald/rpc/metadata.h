#pragma once
// Metadata: an ordered list of (name, value) header or trailer fields with lower-case names, as
// HTTP/2 and gRPC require. A value type; not thread-safe.

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace metald::rpc {

class Metadata {
 public:
  using Entry = std::pair<std::string, std::string>;

  Metadata() = default;
  Metadata(std::initializer_list<Entry> entries);

  // Room for `n` fields without reallocating.
  void Reserve(size_t n) { entries_.reserve(n); }
  // Appends a field; the name is lower-cased.
  void Add(std::string_view name, std::string_view value);
  // Replaces every field of that name with one field.
  void Set(std::string_view name, std::string_view value);
  // Removes every field of that name; returns how many were removed.
  size_t Remove(std::string_view name);
  // The first value of a name (case-insensitive lookup), or nullopt.
  std::optional<std::string_view> Get(std::string_view name) const;
  // Every value of a name, in order.
  std::vector<std::string_view> GetAll(std::string_view name) const;
  bool Has(std::string_view name) const { return Get(name).has_value(); }

  const std::vector<Entry>& entries() const { return entries_; }
  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }

 private:
  std::vector<Entry> entries_;
};

// ASCII lower-case copy.
std::string AsciiLower(std::string_view s);
// Case-insensitive ASCII equality.
bool AsciiIEquals(std::string_view a, std::string_view b);

}  // namespace metald::rpc

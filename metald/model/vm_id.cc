#include "metald/model/vm_id.h"

#include <chrono>
#include <memory>
#include <mutex>
#include <random>

namespace metald::model {
namespace {

constexpr std::string_view kAlphabet = "0123456789abcdefghjkmnpqrstvwxyz";

bool InAlphabet(char c) { return kAlphabet.find(c) != std::string_view::npos; }

}  // namespace

bool IsValidVmId(std::string_view id) {
  if (id.size() != kVmIdLength || id.substr(0, kVmIdPrefix.size()) != kVmIdPrefix) return false;
  std::string_view body = id.substr(kVmIdPrefix.size());
  for (char c : body) {
    if (!InAlphabet(c)) return false;
  }
  // 10 characters hold 50 bits; a 48-bit time needs the first one to be at most 7.
  return body[0] >= '0' && body[0] <= '7';
}

VmIdGenerator::VmIdGenerator() : VmIdGenerator(Options{}) {}

VmIdGenerator::VmIdGenerator(Options options) : options_(std::move(options)) {
  if (!options_.now_unix_ms) {
    options_.now_unix_ms = [] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
          .count();
    };
  }
  if (!options_.random64) {
    struct State {
      std::mutex mu;
      std::mt19937_64 rng{std::random_device{}()};
    };
    auto state = std::make_shared<State>();
    options_.random64 = [state] {
      std::lock_guard<std::mutex> lock(state->mu);
      return state->rng();
    };
  }
}

std::string VmIdGenerator::Next() {
  std::string id(kVmIdPrefix);
  id.reserve(kVmIdLength);
  const uint64_t t = static_cast<uint64_t>(options_.now_unix_ms()) & ((uint64_t{1} << 48) - 1);
  for (int i = 9; i >= 0; --i) id += kAlphabet[(t >> (5 * i)) & 31];
  // 80 random bits: 64 from one call, 16 from another.
  const uint64_t hi = options_.random64();
  const uint64_t lo = options_.random64() & 0xffff;
  // Bits 79..16 are `hi`, bits 15..0 are `lo`; emit 16 groups of 5 bits, most significant first.
  for (int i = 15; i >= 0; --i) {
    const int shift = 5 * i;  // bit offset of this group within the 80-bit value
    uint64_t group;
    if (shift >= 16) {
      group = (hi >> (shift - 16)) & 31;
    } else {
      // The group straddles hi's low bits and lo (only when shift < 16).
      const uint64_t combined = ((hi & 0xffff) << 16) | lo;  // low 32 bits of the 80-bit value
      group = (combined >> shift) & 31;
    }
    id += kAlphabet[group];
  }
  return id;
}

}  // namespace metald::model

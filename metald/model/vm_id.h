#pragma once
// VM identifiers: "vm-" followed by 26 lower-case Crockford base32 characters, ULID layout
// (10 characters of millisecond Unix time, then 16 characters = 80 random bits). Ids therefore
// sort by creation time, which keeps keyset pagination in creation order, and are unguessable
// enough that a customer cannot enumerate another customer's VMs.
//
// Thread-safety: IsValidVmId is pure. A VmIdGenerator is safe to call from several threads only if
// its injected functions are; the defaults are.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace metald::model {

inline constexpr std::string_view kVmIdPrefix = "vm-";
inline constexpr size_t kVmIdLength = 3 + 26;

// True when `id` has exactly the generated shape ("vm-" + 26 characters of
// "0123456789abcdefghjkmnpqrstvwxyz", the first of which is 0-7 so the time fits 48 bits).
bool IsValidVmId(std::string_view id);

class VmIdGenerator {
 public:
  struct Options {
    // Milliseconds since the Unix epoch. Default: std::chrono::system_clock.
    std::function<int64_t()> now_unix_ms;
    // 64 uniformly random bits per call. Default: a std::random_device-seeded mt19937_64 behind a
    // mutex. Tests inject a fixed sequence.
    std::function<uint64_t()> random64;
  };

  VmIdGenerator();
  explicit VmIdGenerator(Options options);

  // A fresh id. Never fails; two calls give different ids with overwhelming probability (80
  // random bits) — the store's primary key catches the impossible collision.
  std::string Next();

 private:
  Options options_;  // Constant after construction.
};

}  // namespace metald::model

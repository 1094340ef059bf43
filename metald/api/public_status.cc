// ToPublicStatus (declared in vm_api.h): what a client may see of an error.

#include <cstdint>
#include <random>
#include <string>

#include "metald/api/vm_api.h"

namespace metald::api {
namespace {

// 8 hex digits (32 random bits): enough to find one log line among a day's errors, short enough
// to read over the phone. Not a secret, so a per-thread PRNG seeded once is fine.
std::string NewRef() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  uint64_t bits = rng();
  std::string ref(8, '0');
  for (char& c : ref) {
    c = kHex[bits & 0xf];
    bits >>= 4;
  }
  return ref;
}

}  // namespace

base::Status ToPublicStatus(const base::Status& status, const observe::Logger& log) {
  switch (status.code()) {
    case base::StatusCode::kInternal:
    case base::StatusCode::kUnknown:
    case base::StatusCode::kDataLoss: {
      std::string ref = NewRef();
      log.Error("Internal error hidden from client", {{"ref", ref}, {"error", status}});
      return base::InternalError("Internal error (ref " + ref + ")");
    }
    default:
      return status;
  }
}

}  // namespace metald::api

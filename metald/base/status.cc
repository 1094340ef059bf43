#include "metald/base/status.h"

#include <array>

namespace metald::base {
namespace {
constexpr std::array<std::string_view, 17> kNames = {
    "ok",        "canceled",       "unknown",           "invalid_argument",   "deadline_exceeded",
    "not_found", "already_exists", "permission_denied", "resource_exhausted", "failed_precondition",
    "aborted",   "out_of_range",   "unimplemented",     "internal",           "unavailable",
    "data_loss", "unauthenticated"};
}  // namespace

std::string_view StatusCodeName(StatusCode code) {
  auto i = static_cast<int>(code);
  if (i < 0 || i >= static_cast<int>(kNames.size())) return "unknown";
  return kNames[static_cast<size_t>(i)];
}

std::optional<StatusCode> StatusCodeFromName(std::string_view name) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == name) return static_cast<StatusCode>(i);
  }
  return std::nullopt;
}

Status Status::WithContext(std::string_view prefix) const {
  if (ok()) return *this;
  std::string m(prefix);
  m += ": ";
  m += message_;
  return Status(code_, std::move(m));
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string s(StatusCodeName(code_));
  if (!message_.empty()) {
    s += ": ";
    s += message_;
  }
  return s;
}

#define METALD_DEFINE_ERROR_(Fn, Code) \
  Status Fn(std::string msg) { return Status(StatusCode::Code, std::move(msg)); }
METALD_DEFINE_ERROR_(CancelledError, kCancelled)
METALD_DEFINE_ERROR_(UnknownError, kUnknown)
METALD_DEFINE_ERROR_(InvalidArgumentError, kInvalidArgument)
METALD_DEFINE_ERROR_(DeadlineExceededError, kDeadlineExceeded)
METALD_DEFINE_ERROR_(NotFoundError, kNotFound)
METALD_DEFINE_ERROR_(AlreadyExistsError, kAlreadyExists)
METALD_DEFINE_ERROR_(PermissionDeniedError, kPermissionDenied)
METALD_DEFINE_ERROR_(ResourceExhaustedError, kResourceExhausted)
METALD_DEFINE_ERROR_(FailedPreconditionError, kFailedPrecondition)
METALD_DEFINE_ERROR_(AbortedError, kAborted)
METALD_DEFINE_ERROR_(OutOfRangeError, kOutOfRange)
METALD_DEFINE_ERROR_(UnimplementedError, kUnimplemented)
METALD_DEFINE_ERROR_(InternalError, kInternal)
METALD_DEFINE_ERROR_(UnavailableError, kUnavailable)
METALD_DEFINE_ERROR_(DataLossError, kDataLoss)
METALD_DEFINE_ERROR_(UnauthenticatedError, kUnauthenticated)
#undef METALD_DEFINE_ERROR_

}  // namespace metald::base

#pragma once
// QMP, the QEMU Machine Protocol: JSON objects over a unix stream socket, one per line (QEMU ends
// each with "\r\n"). The wire schema metald relies on:
//
//   server greeting   {"QMP": {"version": {...}, "capabilities": [...]}}
//   command           {"execute": "<name>", "arguments": {...}, "id": <n>}
//   success reply     {"return": <any>, "id": <n>}
//   error reply       {"error": {"class": "GenericError", "desc": "..."}, "id": <n>}
//   async event       {"event": "SHUTDOWN", "data": {...},
//                      "timestamp": {"seconds": <s>, "microseconds": <us>}}
//
// A client must read the greeting and send "qmp_capabilities" before any other command. Events
// can arrive at any time, including between a command and its reply; QmpClient queues them while
// it waits for a reply. Replies are matched by id, so a late reply to a command that timed out is
// skipped rather than taken for the next command's reply.
//
// Thread-safety: ParseQmpMessage and QmpFramer are values / pure. A QmpClient is not thread-safe;
// its owner serialises calls (the QEMU backend holds it under the VM's mutex).

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "metald/base/status.h"

namespace metald::backend::qemu {

struct QmpEvent {
  std::string name;     // "SHUTDOWN", "POWERDOWN", "RESET", "STOP", "RESUME", ...
  nlohmann::json data;  // The "data" member; null when absent.
  int64_t seconds = 0;  // Timestamp; 0 when absent.
  int64_t microseconds = 0;
};

struct QmpMessage {
  enum class Kind { kGreeting, kReturn, kError, kEvent };
  Kind kind = Kind::kReturn;
  nlohmann::json id;        // kReturn / kError: the echoed id; null when absent.
  nlohmann::json value;     // kGreeting: the "QMP" object; kReturn: the "return" value.
  std::string error_class;  // kError.
  std::string error_desc;   // kError.
  QmpEvent event;           // kEvent.
};

// Parses one QMP message (one line, without its line end). invalid_argument naming what is wrong
// for anything that is not JSON or not one of the four shapes above. Never throws.
base::Result<QmpMessage> ParseQmpMessage(std::string_view line);

// Splits a byte stream into lines. Invariant: buffered bytes never exceed max_line_bytes without
// a line end.
class QmpFramer {
 public:
  explicit QmpFramer(size_t max_line_bytes = 16 << 20) : max_line_bytes_(max_line_bytes) {}

  // Appends received bytes.
  void Feed(std::string_view bytes) { buffer_.append(bytes); }
  // The next complete line without "\n" / "\r\n"; nullopt when none is complete yet. Blank lines
  // are skipped. resource_exhausted when an incomplete line exceeds max_line_bytes (the stream is
  // then unusable).
  base::Result<std::optional<std::string>> Next();

 private:
  size_t max_line_bytes_;
  std::string buffer_;
};

// A QMP status code mapping: CommandNotFound -> unimplemented, DeviceNotFound -> not_found,
// DeviceNotActive / GenericError -> failed_precondition, KVMMissingCap -> unavailable, anything
// else -> internal. The message reads "QMP <command>: <class>: <desc>".
base::Status QmpErrorStatus(std::string_view command, std::string_view error_class,
                            std::string_view desc);

class QmpClient {
 public:
  struct Options {
    // Upper bound on each wait for a reply or the greeting. Default: 60 s (a guard against hangs
    // on a loaded host, not an expected latency).
    std::chrono::milliseconds timeout{60'000};
    // Longest accepted message. Default: 16 MiB.
    size_t max_message_bytes = 16 << 20;
    // Events kept until taken; the oldest are dropped beyond this. Default: 1024.
    size_t max_queued_events = 1024;
  };

  // Connects to the QMP unix socket at `path` (no handshake). invalid_argument when the path does
  // not fit sockaddr_un; unavailable when nothing listens there (yet).
  static base::Result<std::unique_ptr<QmpClient>> Connect(const std::string& path, Options options);
  // Takes ownership of a connected stream socket `fd` (tests use a socketpair).
  QmpClient(int fd, Options options);
  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // Reads the greeting and enters command mode ("qmp_capabilities"). Must be called once, first.
  // Returns QEMU's version object ({"qemu": {"major": 7, ...}, "package": "..."}).
  base::Result<nlohmann::json> Handshake();

  // Runs `command` with `arguments` (null or an object) and returns its "return" value. Events
  // read meanwhile are queued. Errors: the QMP error (QmpErrorStatus), deadline_exceeded after
  // `timeout` (default: Options::timeout), unavailable when the connection closed, internal for a
  // malformed message.
  base::Result<nlohmann::json> Execute(std::string_view command,
                                       const nlohmann::json& arguments = nullptr);
  base::Result<nlohmann::json> Execute(std::string_view command, const nlohmann::json& arguments,
                                       std::chrono::milliseconds timeout);

  // Reads messages for up to `wait` (0: only what is already readable) and queues the events.
  // unavailable when the connection closed. Replies to abandoned commands are dropped.
  base::Status PollEvents(std::chrono::milliseconds wait);

  // Returns and clears the queued events, oldest first.
  std::vector<QmpEvent> TakeEvents();

  // True once the connection closed or its framing was lost; every later call fails fast.
  bool broken() const { return broken_; }

 private:
  // Reads one message, waiting until `deadline`. deadline_exceeded / unavailable / internal.
  base::Result<QmpMessage> ReadMessage(std::chrono::steady_clock::time_point deadline);
  base::Status WriteAll(std::string_view bytes, std::chrono::steady_clock::time_point deadline);
  void QueueEvent(QmpEvent event);

  const int fd_;
  const Options options_;
  QmpFramer framer_;
  std::deque<QmpEvent> events_;
  int64_t next_id_ = 1;
  bool broken_ = false;
};

}  // namespace metald::backend::qemu

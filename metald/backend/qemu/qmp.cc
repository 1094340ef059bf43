#include "metald/backend/qemu/qmp.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace metald::backend::qemu {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string ErrnoText(int err) {
  return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")";
}

// Bounded excerpt of outside bytes for error messages.
std::string Excerpt(std::string_view s) {
  constexpr size_t kMax = 80;
  std::string out(s.substr(0, kMax));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
  }
  if (s.size() > kMax) out += "...";
  return out;
}

int PollTimeoutMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 60'000));
}

}  // namespace

base::Result<QmpMessage> ParseQmpMessage(std::string_view line) {
  json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return base::InvalidArgumentError("QMP message is not JSON");
  if (!j.is_object()) return base::InvalidArgumentError("QMP message is not a JSON object");
  QmpMessage msg;
  if (auto it = j.find("id"); it != j.end()) msg.id = *it;
  if (auto it = j.find("QMP"); it != j.end()) {
    if (!it->is_object()) return base::InvalidArgumentError("QMP greeting is not an object");
    msg.kind = QmpMessage::Kind::kGreeting;
    msg.value = *it;
    return msg;
  }
  if (auto it = j.find("return"); it != j.end()) {
    msg.kind = QmpMessage::Kind::kReturn;
    msg.value = *it;
    return msg;
  }
  if (auto it = j.find("error"); it != j.end()) {
    if (!it->is_object()) return base::InvalidArgumentError("QMP error is not an object");
    auto cls = it->find("class");
    auto desc = it->find("desc");
    if (cls == it->end() || !cls->is_string() || desc == it->end() || !desc->is_string()) {
      return base::InvalidArgumentError("QMP error lacks a string class and desc");
    }
    msg.kind = QmpMessage::Kind::kError;
    msg.error_class = cls->get<std::string>();
    msg.error_desc = desc->get<std::string>();
    return msg;
  }
  if (auto it = j.find("event"); it != j.end()) {
    if (!it->is_string()) return base::InvalidArgumentError("QMP event name is not a string");
    msg.kind = QmpMessage::Kind::kEvent;
    msg.event.name = it->get<std::string>();
    if (auto d = j.find("data"); d != j.end()) msg.event.data = *d;
    if (auto ts = j.find("timestamp"); ts != j.end() && ts->is_object()) {
      auto s = ts->find("seconds");
      auto us = ts->find("microseconds");
      if (s != ts->end() && s->is_number_integer()) msg.event.seconds = s->get<int64_t>();
      if (us != ts->end() && us->is_number_integer()) msg.event.microseconds = us->get<int64_t>();
    }
    return msg;
  }
  return base::InvalidArgumentError("QMP message has none of QMP, return, error, event");
}

base::Result<std::optional<std::string>> QmpFramer::Next() {
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (nl == std::string::npos) {
      if (buffer_.size() > max_line_bytes_) {
        return base::ResourceExhaustedError("QMP message longer than " +
                                            std::to_string(max_line_bytes_) + " bytes");
      }
      return std::optional<std::string>();
    }
    std::string line = buffer_.substr(0, nl);
    buffer_.erase(0, nl + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (line.size() > max_line_bytes_) {
      return base::ResourceExhaustedError("QMP message longer than " +
                                          std::to_string(max_line_bytes_) + " bytes");
    }
    return std::optional<std::string>(std::move(line));
  }
}

base::Status QmpErrorStatus(std::string_view command, std::string_view error_class,
                            std::string_view desc) {
  std::string msg =
      "QMP " + std::string(command) + ": " + std::string(error_class) + ": " + std::string(desc);
  if (error_class == "CommandNotFound") return base::UnimplementedError(std::move(msg));
  if (error_class == "DeviceNotFound") return base::NotFoundError(std::move(msg));
  if (error_class == "GenericError" || error_class == "DeviceNotActive") {
    return base::FailedPreconditionError(std::move(msg));
  }
  if (error_class == "KVMMissingCap") return base::UnavailableError(std::move(msg));
  return base::InternalError(std::move(msg));
}

base::Result<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& path,
                                                            Options options) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return base::InvalidArgumentError("QMP socket path \"" + path + "\" does not fit in " +
                                      std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return base::ResourceExhaustedError("QMP socket: " + ErrnoText(errno));
  int r;
  do {
    r = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    int err = errno;
    ::close(fd);
    return base::UnavailableError("QMP connect " + path + ": " + ErrnoText(err));
  }
  return std::make_unique<QmpClient>(fd, options);
}

QmpClient::QmpClient(int fd, Options options)
    : fd_(fd), options_(options), framer_(options.max_message_bytes) {}

QmpClient::~QmpClient() { ::close(fd_); }

base::Result<json> QmpClient::Handshake() {
  Clock::time_point deadline = Clock::now() + options_.timeout;
  base::Result<QmpMessage> greeting = ReadMessage(deadline);
  if (!greeting.ok()) return greeting.status().WithContext("QMP greeting");
  if (greeting->kind != QmpMessage::Kind::kGreeting) {
    broken_ = true;
    return base::InternalError("QMP greeting: first message is not a greeting");
  }
  json version = greeting->value.value("version", json::object());
  RETURN_IF_ERROR(Execute("qmp_capabilities").status());
  return version;
}

base::Result<json> QmpClient::Execute(std::string_view command, const json& arguments) {
  return Execute(command, arguments, options_.timeout);
}

base::Result<json> QmpClient::Execute(std::string_view command, const json& arguments,
                                      milliseconds timeout) {
  std::string cmd(command);
  if (broken_) return base::UnavailableError("QMP " + cmd + ": connection is closed");
  Clock::time_point deadline = Clock::now() + timeout;
  json request = {{"execute", cmd}, {"id", next_id_++}};
  if (!arguments.is_null()) request["arguments"] = arguments;
  // replace: a path with invalid UTF-8 must not throw out of dump().
  std::string bytes = request.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  base::Status st = WriteAll(bytes, deadline);
  if (!st.ok()) return st.WithContext("QMP " + cmd);
  const json& id = request["id"];
  for (;;) {
    base::Result<QmpMessage> msg = ReadMessage(deadline);
    if (!msg.ok()) {
      if (msg.status().code() == base::StatusCode::kDeadlineExceeded) {
        return base::DeadlineExceededError("QMP " + cmd + ": no reply within " +
                                           std::to_string(timeout.count()) + " ms");
      }
      return msg.status().WithContext("QMP " + cmd);
    }
    switch (msg->kind) {
      case QmpMessage::Kind::kEvent:
        QueueEvent(std::move(msg->event));
        continue;
      case QmpMessage::Kind::kGreeting:
        return base::InternalError("QMP " + cmd + ": unexpected greeting");
      case QmpMessage::Kind::kReturn:
      case QmpMessage::Kind::kError:
        // A reply without id answers a command QEMU could not even parse: ours (one in flight).
        if (!msg->id.is_null() && msg->id != id) continue;  // Late reply to an abandoned command.
        if (msg->kind == QmpMessage::Kind::kError) {
          return QmpErrorStatus(cmd, msg->error_class, msg->error_desc);
        }
        return std::move(msg->value);
    }
  }
}

base::Status QmpClient::PollEvents(milliseconds wait) {
  if (broken_) return base::UnavailableError("QMP: connection is closed");
  Clock::time_point deadline = Clock::now() + wait;
  for (;;) {
    base::Result<QmpMessage> msg = ReadMessage(deadline);
    if (!msg.ok()) {
      if (msg.status().code() == base::StatusCode::kDeadlineExceeded) return base::OkStatus();
      return msg.status();
    }
    if (msg->kind == QmpMessage::Kind::kEvent) QueueEvent(std::move(msg->event));
  }
}

std::vector<QmpEvent> QmpClient::TakeEvents() {
  std::vector<QmpEvent> out(std::make_move_iterator(events_.begin()),
                            std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

void QmpClient::QueueEvent(QmpEvent event) {
  if (events_.size() >= options_.max_queued_events) events_.pop_front();
  events_.push_back(std::move(event));
}

base::Result<QmpMessage> QmpClient::ReadMessage(Clock::time_point deadline) {
  for (;;) {
    base::Result<std::optional<std::string>> line = framer_.Next();
    if (!line.ok()) {
      broken_ = true;
      return line.status();
    }
    if (line->has_value()) {
      base::Result<QmpMessage> msg = ParseQmpMessage(**line);
      if (!msg.ok()) {
        return base::InternalError("malformed message from QEMU (" + msg.status().message() +
                                   "): " + Excerpt(**line));
      }
      return msg;
    }
    if (broken_) return base::UnavailableError("connection is closed");
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, PollTimeoutMs(deadline));
    if (r < 0) {
      if (errno == EINTR) continue;
      broken_ = true;
      return base::InternalError("poll: " + ErrnoText(errno));
    }
    if (r == 0) {
      if (Clock::now() >= deadline) return base::DeadlineExceededError("timed out");
      continue;
    }
    char buf[16384];
    ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      broken_ = true;
      return base::UnavailableError("connection lost: " + ErrnoText(errno));
    }
    if (n == 0) {
      broken_ = true;
      return base::UnavailableError("connection closed by QEMU");
    }
    framer_.Feed(std::string_view(buf, static_cast<size_t>(n)));
  }
}

base::Status QmpClient::WriteAll(std::string_view bytes, Clock::time_point deadline) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      broken_ = true;
      return base::UnavailableError("send: " + ErrnoText(errno));
    }
    pollfd p{fd_, POLLOUT, 0};
    int r = ::poll(&p, 1, PollTimeoutMs(deadline));
    if (r == 0 && Clock::now() >= deadline) {
      return base::DeadlineExceededError("send timed out");
    }
  }
  return base::OkStatus();
}

}  // namespace metald::backend::qemu

// libFuzzer target: the QMP framer and message parser, i.e. every byte QEMU (or whatever answers on
// the QMP socket) can send. Seeds in fuzz_corpus/.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "metald/backend/qemu/qmp.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  metald::backend::qemu::QmpFramer framer(1 << 16);
  // Feed in two pieces so that line reassembly is exercised too.
  size_t half = size / 2;
  framer.Feed(bytes.substr(0, half));
  for (int round = 0; round < 2; ++round) {
    for (;;) {
      auto line = framer.Next();
      if (!line.ok() || !line->has_value()) break;
      auto msg = metald::backend::qemu::ParseQmpMessage(**line);
      if (msg.ok() && msg->kind == metald::backend::qemu::QmpMessage::Kind::kError) {
        (void)metald::backend::qemu::QmpErrorStatus("fuzz", msg->error_class, msg->error_desc);
      }
    }
    if (round == 0) framer.Feed(bytes.substr(half));
  }
  return 0;
}

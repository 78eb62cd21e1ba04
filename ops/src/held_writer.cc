#include "held_writer.h"

#include <string>

#include "torch_status.h"

namespace kvdump {

std::shared_ptr<WriterContext> claimOfferedWriter(int64_t ticket) {
  std::shared_ptr<WriterContext> claimed = WriterContext::claim(ticket);
  if (!claimed) {
    throwStatus(Status::InvalidArgument("ticket " + std::to_string(ticket) +
                                        " does not name a kvdump writer waiting to be claimed (claimed already, "
                                        "closed, or never offered): use AsyncWriter.torch_writer"));
  }
  return claimed;
}

std::shared_ptr<WriterContext> holdWriter(const std::weak_ptr<WriterContext>& claimed) {
  std::shared_ptr<WriterContext> live = claimed.lock();
  if (!live) throwStatus(Status::Lifecycle("the kvdump writer was closed"));
  return live;
}

}  // namespace kvdump

#include "torch_writer.h"

#include "torch_status.h"

namespace kvdump {

TorchWriter::TorchWriter(int64_t ticket) : ticket_(ticket) {
  std::shared_ptr<WriterContext> claimed = WriterContext::claim(ticket);
  context_ = claimed;
  if (!claimed) {
    throwIfError(Status::InvalidArgument("ticket " + std::to_string(ticket) +
                                         " does not name a kvdump writer waiting to be claimed (claimed already, "
                                         "closed, or never offered): use AsyncWriter.torch_writer"));
  }
}

std::shared_ptr<WriterContext> TorchWriter::context() const {
  std::shared_ptr<WriterContext> live = context_.lock();
  if (!live) throwIfError(Status::Lifecycle("the kvdump writer was closed"));
  return live;
}

}  // namespace kvdump

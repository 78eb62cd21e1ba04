#include "torch_writer.h"

#include "held_writer.h"

namespace kvdump {

TorchWriter::TorchWriter(int64_t ticket) : context_(claimOfferedWriter(ticket)), ticket_(ticket) {}

std::shared_ptr<WriterContext> TorchWriter::context() const { return holdWriter(context_); }

}  // namespace kvdump

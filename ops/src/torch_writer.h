// The writer as a torch custom class, so that the ops take the writer object itself as an argument
// (and torch.compile can carry it through a graph) instead of looking it up by number on every call.
#pragma once

#include <torch/custom_class.h>

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>

#include "kvdump_ops/writer_context.h"

namespace kvdump {

/// torch.classes.kvdump.Writer: a weak reference to one WriterContext, claimed once from the ticket
/// its Python writer offered. Weak, so that closing the writer frees its threads and staging memory
/// even while a compiled graph still holds this object. Thread-safe; the reference never changes.
class TorchWriter : public torch::CustomClassHolder {
 public:
  /// Claims the context offered under `ticket`; INVALID_ARGUMENT (as a c10 error) when there is none.
  explicit TorchWriter(int64_t ticket);

  /// The context, held for the caller's call; LIFECYCLE (as a c10 error) once the writer was closed.
  std::shared_ptr<WriterContext> context() const;
  /// The state torch.compile guards on: the ticket it was claimed with, unique per writer.
  std::tuple<std::tuple<std::string, int64_t>> flatten() const { return {{"ticket", ticket_}}; }

 private:
  std::weak_ptr<WriterContext> context_;
  int64_t ticket_;
};

}  // namespace kvdump

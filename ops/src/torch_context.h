// A writer or a loader as a torch custom class, so that the ops take the object itself as an
// argument (and torch.compile can carry it through a graph) instead of looking it up by number on
// every call.
#pragma once

#include <torch/custom_class.h>

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>

#include "held_context.h"

namespace kvdump {

/// torch.classes.kvdump.Writer / Loader: a weak reference to one context, claimed once from the
/// ticket its Python object offered. Weak, so that closing it frees its threads and staging memory
/// even while a compiled graph still holds this object. Thread-safe; the reference never changes.
template <typename Context>
class TorchContext : public torch::CustomClassHolder {
 public:
  /// Claims the context offered under `ticket`; INVALID_ARGUMENT (as a c10 error) when there is none.
  explicit TorchContext(int64_t ticket) : context_(claimOffered<Context>(ticket)), ticket_(ticket) {}

  /// The context, held for the caller's call; LIFECYCLE (as a c10 error) once it was closed.
  std::shared_ptr<Context> context() const { return holdContext(context_); }
  /// The state torch.compile guards on: the ticket it was claimed with, unique per object.
  std::tuple<std::tuple<std::string, int64_t>> flatten() const { return {{"ticket", ticket_}}; }

 private:
  std::weak_ptr<Context> context_;
  int64_t ticket_;
};

using TorchWriter = TorchContext<WriterContext>;
using TorchLoader = TorchContext<LoaderContext>;

}  // namespace kvdump

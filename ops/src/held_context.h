// How torch-facing callers (the torch custom classes and the direct Python entry) take a context
// from its ticket and hold it for one call, with the same errors either way.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kvdump_ops/loader_context.h"
#include "kvdump_ops/ticket_offers.h"
#include "kvdump_ops/writer_context.h"
#include "torch_status.h"

namespace kvdump {

/// What a context is called in errors, and the Python attribute that gives its torch object;
/// compile-time constants, safe anywhere.
template <typename Context>
struct ContextNames;

template <>
struct ContextNames<WriterContext> {
  static constexpr const char* kWhat = "writer";
  static constexpr const char* kTorchAttribute = "AsyncWriter.torch_writer";
};

template <>
struct ContextNames<LoaderContext> {
  static constexpr const char* kWhat = "loader";
  static constexpr const char* kTorchAttribute = "KVLoader.torch_loader";
};

/// Claims the context offered under `ticket` (TicketOffers::claim); INVALID_ARGUMENT, as a c10
/// error, when none waits under it. Thread-safe.
template <typename Context>
std::shared_ptr<Context> claimOffered(int64_t ticket) {
  std::shared_ptr<Context> claimed = TicketOffers<Context>::claim(ticket);
  if (!claimed) {
    throwStatus(Status::InvalidArgument("ticket " + std::to_string(ticket) + " does not name a kvdump " +
                                        ContextNames<Context>::kWhat +
                                        " waiting to be claimed (claimed already, closed, or never offered): use " +
                                        ContextNames<Context>::kTorchAttribute));
  }
  return claimed;
}

/// The context `claimed` names, held for the caller's call; LIFECYCLE, as a c10 error, once it was
/// closed. Thread-safe.
template <typename Context>
std::shared_ptr<Context> holdContext(const std::weak_ptr<Context>& claimed) {
  std::shared_ptr<Context> live = claimed.lock();
  if (!live) throwStatus(Status::Lifecycle(std::string("the kvdump ") + ContextNames<Context>::kWhat + " was closed"));
  return live;
}

}  // namespace kvdump

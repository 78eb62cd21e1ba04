// How torch-facing callers (the torch.classes.kvdump.Writer object and the direct Python entry)
// take a writer from its ticket and hold it for one call, with the same errors either way.
#pragma once

#include <cstdint>
#include <memory>

#include "kvdump_ops/writer_context.h"

namespace kvdump {

/// Claims the context offered under `ticket` (WriterContext::claim); INVALID_ARGUMENT, as a c10
/// error, when none waits under it. Thread-safe.
std::shared_ptr<WriterContext> claimOfferedWriter(int64_t ticket);

/// The context `claimed` names, held for the caller's call; LIFECYCLE, as a c10 error, once the
/// writer was closed. Thread-safe.
std::shared_ptr<WriterContext> holdWriter(const std::weak_ptr<WriterContext>& claimed);

}  // namespace kvdump

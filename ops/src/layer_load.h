// One layer's load task: read its records from the store, check each header, key space and
// checksum, and scatter them into the caller's blocks.
#pragma once

#include <cstdint>

#include "kv_tensors.h"
#include "kvdump/task_control.h"
#include "kvdump_ops/transfer_engine.h"

namespace kvdump {

/// Reads blocks `ids` of `layer` (named by `hashes`), checks each record's header, key space and
/// checksum, and scatters them into `kv` inside a caller-memory section of `control` (a fresh
/// control when run on the calling thread), so once abandoned it never writes into `kv` again. The
/// first failure names its key. Thread-safe for distinct destinations.
Status runLayerLoad(const TransferTarget& target, const LayerKv& kv, uint32_t layer, const BlockIds& ids,
                    const BlockHashes& hashes, TaskControl& control);

}  // namespace kvdump

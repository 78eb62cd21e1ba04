// Moving blocks between a paged KV cache and contiguous host records (IO aggregation, docs/design.md §1).
#pragma once

#include <functional>

#include <c10/core/Event.h>

#include <cstddef>
#include <cstdint>

#include "kv_tensors.h"
#include "kvdump/status.h"

namespace kvdump {

/// Called with the index of a record whose payload a gather has just completed.
using RecordFilled = std::function<void(size_t index)>;

/// Fills the payload (K then V, or the one latent part) of the `count` records at `records[i]`
/// (staging, or a store's lent slots), one record per id; headers are left for the caller. On the
/// CPU: one memcpy per block part. On a device: on a pool stream that first waits for `ready`, one
/// gather per part into a device buffer laid out as the records are, then one device-to-host copy
/// per run of adjacent records; returns after that stream has finished. Call from a worker thread;
/// the records should be pinned host memory for the copy to be asynchronous.
/// `filled(i)`, when set, runs once record i's payload is complete: on the CPU right after its copy,
/// while it is still in cache (so a checksum over it costs no second trip to memory).
Status gatherBlocksToRecords(const LayerKv& kv, const int64_t* ids, size_t count, uint8_t* const* records,
                             const c10::Event* ready, const RecordFilled& filled = nullptr);

/// The reverse: copies the payloads of the `count` records at `records[i]` into blocks `ids` of
/// `kv`. On a device, one host-to-device copy per run of adjacent records and one scatter per part
/// on the current stream, which it synchronizes before returning so the caller may reuse `records`.
Status scatterRecordsToBlocks(const LayerKv& kv, const int64_t* ids, size_t count, const uint8_t* const* records);

}  // namespace kvdump

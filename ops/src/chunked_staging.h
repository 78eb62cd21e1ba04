// What the write task and the load task share about staging: a layer's blocks move in chunks that
// each fit the engine's staging pool, and a wait for staging memory ends when the task is abandoned.
#pragma once

#include <cstddef>

#include "kvdump/staging_pool.h"
#include "kvdump/task_control.h"
#include "kvdump_ops/transfer_engine.h"

namespace kvdump {

/// Blocks of `record_bytes` each per chunk, so that one chunk fits the staging pool: a task larger
/// than the pool is staged in several chunks rather than refused; TOO_LARGE when one record alone is
/// larger than the pool. Pure.
Result<size_t> blocksPerChunk(const TransferTarget& target, size_t record_bytes, size_t total);

/// A lease of `bytes` staging bytes, waiting up to the engine's staging_timeout; the wait ends early
/// (with the pool's error) once `control` is abandoned. Thread-safe for distinct controls.
Result<StagingLease> leaseStaging(const TransferTarget& target, size_t bytes, TaskControl& control);

/// The TIMEOUT of a task abandoned by a deadline before it touched the caller's blocks; a fresh
/// value, thread-safe.
Status abandonedBeforeTouching();

}  // namespace kvdump

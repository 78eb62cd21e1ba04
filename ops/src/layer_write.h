// One layer's write task: gather its blocks into staging records, checksum them, put them in one
// batch, and record in the ledger which stored.
#pragma once

#include <c10/core/Event.h>

#include <memory>
#include <string>
#include <vector>

#include "kv_tensors.h"
#include "kvdump/task_control.h"
#include "kvdump_ops/writer_context.h"

namespace kvdump {

/// Everything a write task captured on the calling thread: storage references (no copy), the host
/// copies of ids and hashes (inline for a typical batch), and the event recorded after the layer's
/// KV was produced. The task owns it by value, so capturing a call is one allocation; the storages
/// and the event are dropped as soon as the last block is gathered. Not thread-safe.
struct LayerWrite {
  std::shared_ptr<WriteTarget> target;
  LayerKv kv;
  BlockIds ids;
  BlockHashes hashes;
  uint32_t layer = 0;  // the request is the task's own (TaskControl::request), not copied here
  std::shared_ptr<c10::Event> ready;  // null for CPU tensors
};

/// Runs on a worker: stages the blocks in bounded chunks, puts them, records in the ledger which
/// stored, and returns the first failure (with its key) after trying every block. Gathers only
/// inside caller-memory sections of `control`, so once abandoned it never reads the KV cache again,
/// and records nothing. Thread-safe for distinct LayerWrites.
Status runLayerWrite(const WriteTarget& target, LayerWrite& write, TaskControl& control);

}  // namespace kvdump

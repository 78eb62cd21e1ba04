// One layer's write task: gather its blocks into staging records, checksum, and put them in one batch.
#pragma once

#include <c10/core/Event.h>

#include <memory>
#include <vector>

#include "kv_tensors.h"
#include "kvdump_ops/writer_context.h"

namespace kvdump {

/// Everything a write task captured on the calling thread: tensor references (no copy), the host
/// copies of ids and hashes, and the event recorded after the layer's KV was produced. A value;
/// the task owns it until it finishes, which is what keeps the tensors alive.
struct LayerWrite {
  LayerKv kv;
  std::vector<int64_t> ids;
  std::vector<uint64_t> hashes;
  uint32_t layer = 0;
  std::shared_ptr<c10::Event> ready;  // null for CPU tensors
};

/// Runs on a worker: stages the blocks in bounded chunks, puts them, returns the first failure
/// (with its key) after trying every block. Thread-safe for distinct LayerWrites.
Status runLayerWrite(WriterContext& ctx, const LayerWrite& write);

/// Runs on the calling thread or a worker: reads blocks `ids` of `layer` (named by `hashes`), checks
/// each record's header and checksum, and scatters them into `kv`. The first failure names its key.
Status runLayerLoad(WriterContext& ctx, const LayerKv& kv, uint32_t layer, const std::vector<int64_t>& ids,
                    const std::vector<uint64_t>& hashes);

}  // namespace kvdump

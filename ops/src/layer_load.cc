#include "layer_load.h"

#include <algorithm>
#include <string>
#include <vector>

#include "block_transfer.h"
#include "chunked_staging.h"
#include "kvdump/block_key.h"

namespace kvdump {
namespace {

// A stored record's header checked against what this destination expects of block `hash`: a record
// of another dtype, shape, layer or key space is an error, never data.
Status recordMatches(const TransferTarget& target, const LayerKv& kv, uint32_t layer, uint64_t hash,
                     const uint8_t* record, size_t size) {
  auto header = decodeBlockRecord(record, size);
  if (!header.ok()) return header.status();
  return checkBlockMatches(header.value(), kv.headerFor(layer, hash, target.keys, target.key_space_fingerprint));
}

// A record larger than the destination's is usually another dtype or shape: read its header to say which.
Status explainTooLarge(const TransferTarget& target, const LayerKv& kv, uint32_t layer, uint64_t hash,
                       const std::string& key, const Status& original) {
  Result<std::vector<uint8_t>> whole = target.store->get(key);
  if (whole.ok()) {
    Status match = recordMatches(target, kv, layer, hash, whole.value().data(), whole.value().size());
    if (!match.ok()) return match.withKey(key);
  }
  return Status::InvalidArgument("stored block is larger than a block of the destination cache (" +
                                 original.message() + ")")
      .withKey(key);
}

// One copy: each record is checked and scattered straight from the store's memory, under a read lease.
Status loadInPlace(const TransferTarget& target, const LayerKv& kv, uint32_t layer, const BlockIds& ids,
                   const BlockHashes& hashes, TaskControl& control) {
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string key = blockKey(target.keys, hashes[i], layer);
    control.setActivity(key);
    Status s = target.store->readLeased(key, [&](ByteView held) -> Status {
      Status match = recordMatches(target, kv, layer, hashes[i], held.data, held.size);
      if (!match.ok()) return match;
      CallerMemoryScope section(control);
      if (!section.entered()) return abandonedBeforeTouching();
      const uint8_t* record = held.data;
      return scatterRecordsToBlocks(kv, &ids[i], 1, &record);
    });
    control.setActivity({});
    if (!s.ok()) {
      if (s.key().empty()) s.withKey(key);
      return s;
    }
  }
  return Status::Ok();
}

}  // namespace

Status runLayerLoad(const TransferTarget& target, const LayerKv& kv, uint32_t layer, const BlockIds& ids,
                    const BlockHashes& hashes, TaskControl& control) {
  // A device destination keeps the staged path: one batched host-to-device copy beats one per block.
  if (target.store->lendsMemory() && kv.device().is_cpu()) return loadInPlace(target, kv, layer, ids, hashes, control);
  const size_t record = kv.recordBytes();
  const size_t total = ids.size();
  auto chunk = blocksPerChunk(target, record, total);
  if (!chunk.ok()) return chunk.status();
  for (size_t begin = 0; begin < total; begin += chunk.value()) {
    const size_t count = std::min(chunk.value(), total - begin);
    auto lease = leaseStaging(target, count * record, control);
    if (!lease.ok()) return control.abandoned() ? abandonedBeforeTouching() : lease.status();
    uint8_t* records = lease.value().data();
    std::vector<std::string> keys;
    std::vector<MutableByteView> dsts;
    keys.reserve(count);
    dsts.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      keys.push_back(blockKey(target.keys, hashes[begin + i], layer));
      dsts.push_back({records + i * record, record});
    }
    control.setActivity(keys.front());
    auto got = target.store->batchGetInto(keys, dsts);
    control.setActivity({});
    if (got.size() != count) return Status::Internal("store returned the wrong number of results for a load");
    for (size_t i = 0; i < count; ++i) {
      if (!got[i].ok()) {
        Status s = got[i].status();
        if (s.key().empty()) s.withKey(keys[i]);
        if (s.code() == StatusCode::kTooLarge) return explainTooLarge(target, kv, layer, hashes[begin + i], keys[i], s);
        return s;
      }
      Status match = recordMatches(target, kv, layer, hashes[begin + i], records + i * record, got[i].value());
      if (!match.ok()) return match.withKey(keys[i]);
    }
    CallerMemoryScope section(control);
    if (!section.entered()) return abandonedBeforeTouching();
    std::vector<const uint8_t*> at(count);
    for (size_t i = 0; i < count; ++i) at[i] = records + i * record;
    Status scattered = scatterRecordsToBlocks(kv, ids.data() + begin, count, at.data());
    if (!scattered.ok()) return scattered;
  }
  return Status::Ok();
}

}  // namespace kvdump

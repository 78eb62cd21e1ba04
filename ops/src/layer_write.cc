#include "layer_write.h"

#include <algorithm>

#include "block_transfer.h"
#include "kvdump/block_key.h"

namespace kvdump {
namespace {

// Blocks per chunk so one chunk fits the staging pool; a task larger than the pool is staged in
// several chunks rather than refused, and a block larger than the pool is TOO_LARGE.
Result<size_t> blocksPerChunk(const WriteTarget& target, size_t record_bytes, size_t total) {
  const size_t capacity = target.staging->capacityBytes();
  if (record_bytes > capacity) {
    return Status::TooLarge("one KV block record is " + std::to_string(record_bytes) +
                            " bytes, larger than the whole staging pool (" + std::to_string(capacity) + ")");
  }
  return std::min(total, capacity / record_bytes);
}

Status summarise(Status first, size_t failed, size_t total) {
  if (failed == 0) return Status::Ok();
  Status out(first.code(), std::to_string(failed) + " of " + std::to_string(total) + " block(s) failed; first: " +
                               first.message());
  out.withKey(first.key());
  out.withPayload(first.payload());  // e.g. the exception a Python store raised, chained at the barrier
  return out;
}

Status abandonedBeforeTouching() {
  return Status::Timeout("the task was abandoned by a deadline before it touched the caller's blocks");
}

// A staging lease whose wait ends early when the task is abandoned.
Result<StagingLease> leaseFor(const WriteTarget& target, size_t bytes, TaskControl& control) {
  std::weak_ptr<StagingPool> pool = target.staging;
  control.setWake([pool] {
    if (auto p = pool.lock()) p->wakeWaiters();
  });
  auto lease = target.staging->lease(bytes, target.staging_timeout, [&control] { return control.abandoned(); });
  control.setWake(nullptr);
  return lease;
}

// A record larger than the destination's is usually another dtype or shape: read its header to say which.
Status explainTooLarge(const WriteTarget& target, const LayerKv& kv, uint32_t layer, uint64_t hash,
                       const std::string& key, const Status& original) {
  Result<std::vector<uint8_t>> whole = target.store->get(key);
  if (whole.ok()) {
    auto header = decodeBlockRecord(whole.value().data(), whole.value().size());
    if (header.ok()) {
      BlockHeader expected = kv.headerFor(layer, hash, target.keys, target.key_space_fingerprint);
      Status match = checkBlockMatches(header.value(), expected);
      if (!match.ok()) return match.withKey(key);
    } else {
      return Status(header.status()).withKey(key);
    }
  }
  return Status::InvalidArgument("stored block is larger than a block of the destination cache (" +
                                 original.message() + ")")
      .withKey(key);
}

}  // namespace

Status runLayerWrite(const WriteTarget& target, LayerWrite& write, TaskControl& control) {
  const size_t record = write.kv.recordBytes();
  const size_t total = write.ids.size();
  auto chunk = blocksPerChunk(target, record, total);
  if (!chunk.ok()) return chunk.status();
  Status first_failure;
  size_t failed = 0;
  std::vector<std::string> keys;
  std::vector<ByteView> values;
  for (size_t begin = 0; begin < total; begin += chunk.value()) {
    const size_t count = std::min(chunk.value(), total - begin);
    const bool last_chunk = begin + count == total;
    auto lease = leaseFor(target, count * record, control);
    if (!lease.ok()) return control.abandoned() ? abandonedBeforeTouching() : lease.status();
    uint8_t* records = lease.value().data();
    // Headers are built before the gather: they need the layout, which the section below drops.
    keys.clear();
    values.clear();
    std::vector<BlockHeader> headers;
    headers.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      headers.push_back(write.kv.headerFor(write.layer, write.hashes[begin + i], target.keys,
                                           target.key_space_fingerprint));
    }
    {
      CallerMemoryScope section(control);
      if (!section.entered()) return abandonedBeforeTouching();
      // Only the first chunk waits for the event; later chunks are ordered after it on the host.
      Status gathered = gatherBlocksToRecords(write.kv, write.ids.data() + begin, count, records,
                                              begin == 0 ? write.ready.get() : nullptr);
      if (last_chunk || !gathered.ok()) {
        // The caller may reuse these blocks once the writer lets go: drop the references now, not
        // after a put that may stall.
        write.kv.k = at::Tensor();
        write.kv.v = at::Tensor();
        write.ready.reset();
      }
      if (!gathered.ok()) return gathered;
    }
    for (size_t i = 0; i < count; ++i) {
      uint8_t* rec = records + i * record;
      BlockHeader& header = headers[i];
      header.checksum = payloadChecksum(rec + BlockHeader::kBytes, header.payload_bytes);
      encodeBlockHeader(header, rec);
      keys.push_back(blockKey(target.keys, write.hashes[begin + i], write.layer));
      values.push_back({rec, record});
    }
    control.setActivity(keys.front());
    std::vector<Status> put = target.store->batchPut(keys, values);
    control.setActivity({});
    if (put.size() != count) {
      put.assign(count, Status::Internal("store returned " + std::to_string(put.size()) + " results for " +
                                         std::to_string(count) + " puts"));
    }
    control.runIfLive([&] {
      target.ledger.record(control.cycle(), write.request, write.layer, write.hashes.data() + begin, put.data(),
                           count);
    });
    for (size_t i = 0; i < count; ++i) {
      if (put[i].ok()) continue;
      if (failed++ == 0) {
        first_failure = put[i];
        if (first_failure.key().empty()) first_failure.withKey(keys[i]);
      }
    }
  }
  return summarise(first_failure, failed, total);
}

Status runLayerLoad(const WriteTarget& target, const LayerKv& kv, uint32_t layer, const std::vector<int64_t>& ids,
                    const std::vector<uint64_t>& hashes, TaskControl& control) {
  const size_t record = kv.recordBytes();
  const size_t total = ids.size();
  auto chunk = blocksPerChunk(target, record, total);
  if (!chunk.ok()) return chunk.status();
  for (size_t begin = 0; begin < total; begin += chunk.value()) {
    const size_t count = std::min(chunk.value(), total - begin);
    auto lease = leaseFor(target, count * record, control);
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
      auto header = decodeBlockRecord(records + i * record, got[i].value());
      if (!header.ok()) return Status(header.status()).withKey(keys[i]);
      const BlockHeader expected = kv.headerFor(layer, hashes[begin + i], target.keys, target.key_space_fingerprint);
      Status match = checkBlockMatches(header.value(), expected);
      if (!match.ok()) return match.withKey(keys[i]);
    }
    CallerMemoryScope section(control);
    if (!section.entered()) return abandonedBeforeTouching();
    Status scattered = scatterRecordsToBlocks(kv, ids.data() + begin, count, records);
    if (!scattered.ok()) return scattered;
  }
  return Status::Ok();
}

}  // namespace kvdump

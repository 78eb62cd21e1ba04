#include "layer_write.h"

#include <algorithm>

#include "block_transfer.h"
#include "kvdump/block_key.h"

namespace kvdump {
namespace {

// Blocks per chunk so one chunk fits the staging pool; a task larger than the pool is staged in
// several chunks rather than refused, and a block larger than the pool is TOO_LARGE.
Result<size_t> blocksPerChunk(WriterContext& ctx, size_t record_bytes, size_t total) {
  const size_t capacity = ctx.staging().capacityBytes();
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

}  // namespace

Status runLayerWrite(WriterContext& ctx, const LayerWrite& write) {
  const LayerKv& kv = write.kv;
  const size_t record = kv.recordBytes();
  const size_t total = write.ids.size();
  auto chunk = blocksPerChunk(ctx, record, total);
  if (!chunk.ok()) return chunk.status();
  const KeySpace& space = ctx.keys();
  Status first_failure;
  size_t failed = 0;
  for (size_t begin = 0; begin < total; begin += chunk.value()) {
    const size_t count = std::min(chunk.value(), total - begin);
    auto lease = ctx.staging().lease(count * record, ctx.options().staging_timeout);
    if (!lease.ok()) return lease.status();
    uint8_t* records = lease.value().data();
    // Only the first chunk waits for the event; later chunks are ordered after it on the host.
    Status gathered = gatherBlocksToRecords(kv, write.ids.data() + begin, count, records,
                                            begin == 0 ? write.ready.get() : nullptr);
    if (!gathered.ok()) return gathered;
    std::vector<std::string> keys;
    std::vector<ByteView> values;
    keys.reserve(count);
    values.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      uint8_t* rec = records + i * record;
      const uint64_t hash = write.hashes[begin + i];
      BlockHeader header = kv.headerFor(write.layer, hash, static_cast<uint16_t>(space.tp_rank),
                                        static_cast<uint16_t>(space.tp_size));
      header.checksum = payloadChecksum(rec + BlockHeader::kBytes, header.payload_bytes);
      encodeBlockHeader(header, rec);
      keys.push_back(blockKey(space, hash, write.layer));
      values.push_back({rec, record});
    }
    std::vector<Status> put = ctx.store().batchPut(keys, values);
    for (size_t i = 0; i < put.size(); ++i) {
      if (put[i].ok()) continue;
      if (failed++ == 0) {
        first_failure = put[i];
        if (first_failure.key().empty()) first_failure.withKey(keys[i]);
      }
    }
  }
  return summarise(first_failure, failed, total);
}

Status runLayerLoad(WriterContext& ctx, const LayerKv& kv, uint32_t layer, const std::vector<int64_t>& ids,
                    const std::vector<uint64_t>& hashes) {
  const size_t record = kv.recordBytes();
  const size_t total = ids.size();
  auto chunk = blocksPerChunk(ctx, record, total);
  if (!chunk.ok()) return chunk.status();
  const KeySpace& space = ctx.keys();
  for (size_t begin = 0; begin < total; begin += chunk.value()) {
    const size_t count = std::min(chunk.value(), total - begin);
    auto lease = ctx.staging().lease(count * record, ctx.options().staging_timeout);
    if (!lease.ok()) return lease.status();
    uint8_t* records = lease.value().data();
    std::vector<std::string> keys;
    std::vector<MutableByteView> dsts;
    keys.reserve(count);
    dsts.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      keys.push_back(blockKey(space, hashes[begin + i], layer));
      dsts.push_back({records + i * record, record});
    }
    auto got = ctx.store().batchGetInto(keys, dsts);
    for (size_t i = 0; i < count; ++i) {
      if (!got[i].ok()) {
        Status s = got[i].status();
        if (s.key().empty()) s.withKey(keys[i]);
        if (s.code() == StatusCode::kTooLarge) {
          return Status::InvalidArgument("stored block is larger than a block of the destination cache (" +
                                         s.message() + ")").withKey(keys[i]);
        }
        return s;
      }
      auto header = decodeBlockRecord(records + i * record, got[i].value());
      if (!header.ok()) return Status(header.status()).withKey(keys[i]);
      const BlockHeader expected = kv.headerFor(layer, hashes[begin + i], static_cast<uint16_t>(space.tp_rank),
                                                static_cast<uint16_t>(space.tp_size));
      Status match = checkBlockMatches(header.value(), expected);
      if (!match.ok()) return match.withKey(keys[i]);
    }
    Status scattered = scatterRecordsToBlocks(kv, ids.data() + begin, count, records);
    if (!scattered.ok()) return scattered;
  }
  return Status::Ok();
}

}  // namespace kvdump

#include "layer_write.h"

#include <algorithm>
#include <optional>

#include "block_transfer.h"
#include "chunked_staging.h"
#include "kvdump/block_key.h"

namespace kvdump {
namespace {

Status summarise(Status first, size_t failed, size_t total) {
  if (failed == 0) return Status::Ok();
  Status out(first.code(), std::to_string(failed) + " of " + std::to_string(total) + " block(s) failed; first: " +
                               first.message());
  out.withKey(first.key());
  out.withPayload(first.payload());  // e.g. the exception a Python store raised, chained at the barrier
  return out;
}

// Where one chunk's records are built: slots the store lends (filled in place, then published), or
// a staging lease whose records are then handed to batchPut. Per block: the record's address, or
// null with the reason in `status` when the store could not lend a slot for it.
struct ChunkDestinations {
  std::vector<uint8_t*> at;
  std::vector<Status> status;
  std::vector<LentSlot> slots;  // lent path only, parallel to `at`
  std::optional<StagingLease> lease;
  bool lent = false;
};

Result<ChunkDestinations> destinationsFor(const WriteTarget& target, const std::vector<std::string>& keys,
                                          size_t record, TaskControl& control) {
  ChunkDestinations d;
  d.at.assign(keys.size(), nullptr);
  d.status.assign(keys.size(), Status::Ok());
  if (target.store->lendsMemory()) {
    d.lent = true;
    std::vector<Result<LentSlot>> slots = target.store->lendSlots(keys, record);
    d.slots.assign(keys.size(), LentSlot{});
    for (size_t i = 0; i < keys.size(); ++i) {
      if (i < slots.size() && slots[i].ok() && slots[i].value().size == record) {
        d.slots[i] = slots[i].value();
        d.at[i] = d.slots[i].data;
      } else if (i < slots.size() && slots[i].ok()) {
        target.store->abandonSlots({slots[i].value()});
        d.status[i] = Status::Internal("store lent a slot of the wrong size").withKey(keys[i]);
      } else {
        d.status[i] = i < slots.size() ? slots[i].status() : Status::Internal("store lent too few slots");
        if (d.status[i].key().empty()) d.status[i].withKey(keys[i]);
      }
    }
    return d;
  }
  auto lease = leaseStaging(target, keys.size() * record, control);
  if (!lease.ok()) return lease.status();
  d.lease.emplace(std::move(lease).value());
  for (size_t i = 0; i < keys.size(); ++i) d.at[i] = d.lease->data() + i * record;
  return d;
}

// Gives a chunk's lent slots back unless they were handed on (published or abandoned): whatever way
// the task leaves, early return or exception, no slot stays lent.
class LentSlotsGuard {
 public:
  LentSlotsGuard(const WriteTarget& target, const ChunkDestinations& d) : target_(target), d_(d) {}
  ~LentSlotsGuard() {
    if (settled_ || !d_.lent) return;
    try {
      std::vector<LentSlot> lent;
      for (size_t i = 0; i < d_.at.size(); ++i) {
        if (d_.at[i] != nullptr) lent.push_back(d_.slots[i]);
      }
      target_.store->abandonSlots(lent);
    } catch (...) {
      // Out of memory while unwinding: the slots stay lent (invisible), nothing is corrupted.
    }
  }
  LentSlotsGuard(const LentSlotsGuard&) = delete;
  LentSlotsGuard& operator=(const LentSlotsGuard&) = delete;
  void settled() { settled_ = true; }

 private:
  const WriteTarget& target_;
  const ChunkDestinations& d_;
  bool settled_ = false;
};

// Hands the filled records to the store and records in the ledger which stored. An abandoned task
// publishes nothing (lent slots are taken back) and records nothing; what its staged put landed is
// discarded, so the store may reclaim it. Returns one status per block.
std::vector<Status> storeRecords(const WriteTarget& target, LayerWrite& write, size_t begin,
                                 const std::vector<std::string>& keys, ChunkDestinations& d, size_t record,
                                 TaskControl& control, LentSlotsGuard& guard) {
  const size_t count = keys.size();
  std::vector<size_t> filled;
  for (size_t i = 0; i < count; ++i) {
    if (d.at[i] != nullptr) filled.push_back(i);
  }
  std::vector<Status> result = d.status;
  auto recordInLedger = [&] {
    target.ledger.record(control.cycle(), control.request(), write.layer, write.hashes.data() + begin, result.data(), count);
  };
  if (d.lent) {
    std::vector<LentSlot> slots;
    for (size_t i : filled) slots.push_back(d.slots[i]);
    const bool live = control.runIfLive([&] {
      guard.settled();  // publishSlots takes every slot, whatever it returns
      std::vector<Status> published = target.store->publishSlots(slots);
      for (size_t j = 0; j < filled.size(); ++j) {
        result[filled[j]] = j < published.size() ? published[j] : Status::Internal("store returned too few results");
      }
      recordInLedger();
    });
    if (!live) {
      guard.settled();
      target.store->abandonSlots(slots);
      for (size_t i : filled) result[i] = abandonedBeforeTouching();
    }
    return result;
  }
  std::vector<std::string> put_keys;
  std::vector<ByteView> values;
  for (size_t i : filled) {
    put_keys.push_back(keys[i]);
    values.push_back({d.at[i], record});
  }
  control.setActivity(put_keys.empty() ? std::string() : put_keys.front());
  std::vector<Status> put = target.store->batchPut(put_keys, values);
  control.setActivity({});
  if (put.size() != put_keys.size()) {
    put.assign(put_keys.size(), Status::Internal("store returned " + std::to_string(put.size()) + " results for " +
                                                     std::to_string(put_keys.size()) + " puts"));
  }
  for (size_t j = 0; j < filled.size(); ++j) result[filled[j]] = put[j];
  if (!control.runIfLive(recordInLedger)) {
    std::vector<std::string> landed;
    for (size_t j = 0; j < filled.size(); ++j) {
      if (put[j].ok()) landed.push_back(put_keys[j]);
    }
    target.store->discard(landed);
  }
  return result;
}

}  // namespace

Status runLayerWrite(const WriteTarget& target, LayerWrite& write, TaskControl& control) {
  const size_t record = write.kv.recordBytes();
  const size_t total = write.ids.size();
  // A store that lends memory bounds the bytes in flight itself: no staging, so one chunk.
  Result<size_t> chunk = target.store->lendsMemory() ? Result<size_t>(std::max<size_t>(total, 1))
                                                      : blocksPerChunk(target, record, total);
  if (!chunk.ok()) return chunk.status();
  Status first_failure;
  size_t failed = 0;
  for (size_t begin = 0; begin < total; begin += chunk.value()) {
    const size_t count = std::min(chunk.value(), total - begin);
    const bool last_chunk = begin + count == total;
    std::vector<std::string> keys;
    keys.reserve(count);
    for (size_t i = 0; i < count; ++i) keys.push_back(blockKey(target.keys, write.hashes[begin + i], write.layer));
    control.setActivity(keys.front());
    auto destinations = destinationsFor(target, keys, record, control);
    control.setActivity({});
    if (!destinations.ok()) return control.abandoned() ? abandonedBeforeTouching() : destinations.status();
    ChunkDestinations& d = destinations.value();
    LentSlotsGuard unpublished(target, d);
    // Headers are built before the gather: they need the layout, which the section below drops.
    std::vector<BlockHeader> headers;
    std::vector<int64_t> ids;
    std::vector<uint8_t*> records;
    std::vector<size_t> slot_of;  // gathered record j is block slot_of[j] of the chunk
    for (size_t i = 0; i < count; ++i) {
      headers.push_back(write.kv.headerFor(write.layer, write.hashes[begin + i], target.keys,
                                           target.key_space_fingerprint));
      if (d.at[i] == nullptr) continue;
      ids.push_back(write.ids[begin + i]);
      records.push_back(d.at[i]);
      slot_of.push_back(i);
    }
    {
      CallerMemoryScope section(control);
      if (!section.entered()) return abandonedBeforeTouching();
      // Only the first chunk waits for the event; later chunks are ordered after it on the host.
      // The checksum of each record is taken right after its copy, while it is still in cache.
      auto checksum = [&](size_t j) {
        BlockHeader& header = headers[slot_of[j]];
        header.checksum = payloadChecksum(records[j] + BlockHeader::kBytes, header.payload_bytes);
        encodeBlockHeader(header, records[j]);
      };
      Status gathered = records.empty() ? Status::Ok()
                                        : gatherBlocksToRecords(write.kv, ids.data(), ids.size(), records.data(),
                                                                begin == 0 ? write.ready.get() : nullptr, checksum);
      if (last_chunk || !gathered.ok()) {
        // The caller may reuse these blocks once the writer lets go: drop the references now, not
        // after a put that may stall.
        write.kv.release();
        write.ready.reset();
      }
      if (!gathered.ok()) return gathered;
    }
    std::vector<Status> stored = storeRecords(target, write, begin, keys, d, record, control, unpublished);
    for (size_t i = 0; i < count; ++i) {
      if (stored[i].ok()) continue;
      if (failed++ == 0) {
        first_failure = stored[i];
        if (first_failure.key().empty()) first_failure.withKey(keys[i]);
      }
    }
  }
  return summarise(first_failure, failed, total);
}

}  // namespace kvdump

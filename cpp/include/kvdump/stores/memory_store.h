// MemoryStore: the embedded default store. One arena allocated up front, values in slots of it,
// writers fill slots in place, and least-recently-used blocks make room when it fills.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kvdump/cache_store.h"
#include "kvdump/host_memory.h"
#include "kvdump/stores/slab_arena.h"

namespace kvdump {

/// What a full MemoryStore does with a value that does not fit. The numbers are stable.
enum class EvictionPolicy : uint8_t {
  kEvict = 0,   // evict least-recently-used committed blocks, a whole block (commit and layers) at a time
  kRefuse = 1,  // keep every committed block; the put fails with STORE_FULL
};

/// "evict" or "refuse".
const char* evictionPolicyName(EvictionPolicy policy);

/// Options of a MemoryStore; a plain value. Checked by MemoryStore::create.
struct MemoryStoreOptions {
  size_t capacity_bytes = size_t{1} << 30;
  EvictionPolicy eviction = EvictionPolicy::kEvict;
  /// Eviction starts when a put would take the bytes in use above high_watermark * capacity, and
  /// stops when they are at most low_watermark * capacity (0 < low <= high <= 1).
  double high_watermark = 0.9;
  double low_watermark = 0.8;
  /// Slab size (a value must fit one slab); 0 picks min(4 MiB, max(capacity / 8, min(capacity, 256 KiB))).
  size_t slab_bytes = 0;
  /// Where the arena comes from: empty means pageable memory (one allocation); a device's pinned
  /// allocator, called for pieces of about 256 MiB of whole slabs, makes device-to-host copies land
  /// in the store directly.
  HostAllocator allocator;
};

/// Counters of a MemoryStore; a plain value snapshot.
struct MemoryStoreStats {
  size_t capacity_bytes = 0;
  size_t used_bytes = 0;      // bytes of values, loans and replaced values readers still hold
  size_t entries = 0;         // keys readable now
  size_t lent = 0;            // slots lent to writers and not yet published or abandoned
  size_t leased = 0;          // values under a read lease now
  size_t slab_bytes = 0;
  uint64_t hits = 0;          // reads that found their key
  uint64_t misses = 0;        // reads that did not
  uint64_t evictions = 0;     // committed values evicted to make room (layers and commit records)
  uint64_t reclaimed = 0;     // values of failed or aborted cycles reclaimed to make room
  uint64_t rejected_full = 0; // puts and loans refused with STORE_FULL
  EvictionPolicy eviction = EvictionPolicy::kEvict;
  double high_watermark = 0;
  double low_watermark = 0;
};

/// In-process store holding up to `capacity_bytes` of values in one arena (capacity rounded up to
/// whole slabs), allocated and touched when it is made, so a put never allocates or faults. Values live in slab slots; up to 64 bytes (commit records) live
/// in the key's entry instead. Writers may fill slots in place (lendSlots), readers read in place
/// under a lease (readLeased). Eviction works on blocks: all layers of a block hash and its commit
/// records go together, in one step under the lock; a block a writer has stored but neither committed
/// nor discarded (its cycle is still open) and a block under a read lease are never evicted.
/// Every method is thread-safe: one mutex guards the metadata, bytes are copied outside it.
class MemoryStore final : public CacheStore {
 public:
  /// Checks `options` (INVALID_ARGUMENT naming the field), allocates the arena and touches its pages.
  static Result<std::shared_ptr<MemoryStore>> create(MemoryStoreOptions options);
  /// A store of `capacity_bytes` with the default policy, in pageable memory; aborts on bad arguments.
  explicit MemoryStore(size_t capacity_bytes);
  ~MemoryStore() override;

  std::string name() const override { return "memory"; }
  Status put(std::string_view key, ByteView value) override;
  /// Lends every slot under one lock, copies outside it, publishes every slot under one lock.
  std::vector<Status> batchPut(const std::vector<std::string>& keys, const std::vector<ByteView>& values) override;
  Result<std::vector<uint8_t>> get(std::string_view key) override;
  Result<size_t> getInto(std::string_view key, MutableByteView dst) override;
  Result<bool> exists(std::string_view key) override;
  Status remove(std::string_view key) override;

  bool lendsMemory() const override { return true; }
  std::vector<Result<LentSlot>> lendSlots(const std::vector<std::string>& keys, size_t size) override;
  std::vector<Status> publishSlots(const std::vector<LentSlot>& slots) override;
  void abandonSlots(const std::vector<LentSlot>& slots) override;
  Status readLeased(std::string_view key, const std::function<Status(ByteView)>& reader) override;
  void discard(const std::vector<std::string>& keys) override;

  MemoryStoreStats stats() const;
  const MemoryStoreOptions& options() const { return options_; }

 private:
  struct Entry;
  struct Group;
  struct Impl;

  MemoryStore(MemoryStoreOptions options, std::vector<HostAllocation> arena);

  const MemoryStoreOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvdump

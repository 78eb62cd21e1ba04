// MemoryStore: the embedded default store, in-process, sharded, bounded by a byte capacity.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kvdump/cache_store.h"

namespace kvdump {

/// Counters of a MemoryStore; a plain value snapshot.
struct MemoryStoreStats {
  size_t capacity_bytes = 0;
  size_t used_bytes = 0;
  size_t entries = 0;
  uint64_t rejected_full = 0;  // puts refused with STORE_FULL
};

/// In-process store bounded by `capacity_bytes` of values. Full policy: a put that does not fit is
/// refused with STORE_FULL and nothing is evicted, so a stored block never disappears behind the
/// writer's back (the writer reports the failure; the caller decides what to remove). Keys are
/// spread over independently locked shards so writer threads do not serialise on one mutex. All
/// methods are thread-safe; the store owns copies of the values it holds.
class MemoryStore final : public CacheStore {
 public:
  explicit MemoryStore(size_t capacity_bytes, size_t num_shards = 16);

  std::string name() const override { return "memory"; }
  Status put(std::string_view key, ByteView value) override;
  Result<std::vector<uint8_t>> get(std::string_view key) override;
  Result<size_t> getInto(std::string_view key, MutableByteView dst) override;
  Result<bool> exists(std::string_view key) override;
  Status remove(std::string_view key) override;

  MemoryStoreStats stats() const;
  size_t numShards() const { return num_shards_; }

 private:
  using Value = std::shared_ptr<const std::vector<uint8_t>>;
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<std::string, Value> entries;
  };

  Shard& shardFor(std::string_view key) const;
  Value find(std::string_view key) const;
  bool reserve(size_t bytes);

  const size_t capacity_bytes_;
  const size_t num_shards_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<size_t> used_bytes_{0};
  std::atomic<size_t> entries_{0};
  std::atomic<uint64_t> rejected_full_{0};
};

}  // namespace kvdump

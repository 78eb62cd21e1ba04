#include "kvdump/memory_store.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <utility>

namespace kvdump {

MemoryStore::MemoryStore(size_t capacity_bytes, size_t num_shards)
    : capacity_bytes_(capacity_bytes),
      num_shards_(std::max<size_t>(num_shards, 1)),
      shards_(new Shard[num_shards_]) {}

MemoryStore::Shard& MemoryStore::shardFor(std::string_view key) const {
  return shards_[std::hash<std::string_view>{}(key) % num_shards_];
}

bool MemoryStore::reserve(size_t bytes) {
  size_t used = used_bytes_.load(std::memory_order_relaxed);
  do {
    if (bytes > capacity_bytes_ || used > capacity_bytes_ - bytes) return false;
  } while (!used_bytes_.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
  return true;
}

Status MemoryStore::put(std::string_view key, ByteView value) {
  if (key.empty()) return Status::InvalidArgument("empty key");
  if (value.size > 0 && value.data == nullptr) return Status::InvalidArgument("null value pointer").withKey(std::string(key));
  if (value.size > capacity_bytes_) {
    rejected_full_.fetch_add(1, std::memory_order_relaxed);
    return Status::StoreFull("value of " + std::to_string(value.size) + " bytes exceeds the store's capacity of " +
                             std::to_string(capacity_bytes_))
        .withKey(std::string(key));
  }
  // Copy outside the shard lock: the lock guards only the map, not the bytes.
  auto stored = std::make_shared<const std::vector<uint8_t>>(value.data, value.data + value.size);
  Value replaced;
  Shard& shard = shardFor(key);
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.entries.find(std::string(key));
    const size_t old_size = it == shard.entries.end() ? 0 : it->second->size();
    // An overwrite needs room only for the growth, so rewriting a block in a nearly full store works.
    if (value.size > old_size && !reserve(value.size - old_size)) {
      rejected_full_.fetch_add(1, std::memory_order_relaxed);
      return Status::StoreFull("memory store full: " + std::to_string(used_bytes_.load()) + " of " +
                               std::to_string(capacity_bytes_) + " bytes used, value needs " +
                               std::to_string(value.size))
          .withKey(std::string(key));
    }
    if (value.size < old_size) used_bytes_.fetch_sub(old_size - value.size, std::memory_order_relaxed);
    if (it == shard.entries.end()) {
      shard.entries.emplace(std::string(key), std::move(stored));
      entries_.fetch_add(1, std::memory_order_relaxed);
    } else {
      replaced = std::exchange(it->second, std::move(stored));
    }
  }
  return Status::Ok();  // `replaced` is freed here, outside the lock
}

MemoryStore::Value MemoryStore::find(std::string_view key) const {
  Shard& shard = shardFor(key);
  std::lock_guard<std::mutex> lock(shard.mu);
  auto it = shard.entries.find(std::string(key));
  return it == shard.entries.end() ? nullptr : it->second;
}

Result<std::vector<uint8_t>> MemoryStore::get(std::string_view key) {
  if (key.empty()) return Status::InvalidArgument("empty key");
  Value v = find(key);
  if (!v) return Status::NotFound("no such key").withKey(std::string(key));
  return std::vector<uint8_t>(*v);
}

Result<size_t> MemoryStore::getInto(std::string_view key, MutableByteView dst) {
  if (key.empty()) return Status::InvalidArgument("empty key");
  Value v = find(key);
  if (!v) return Status::NotFound("no such key").withKey(std::string(key));
  if (v->size() > dst.size) return bufferTooSmall(key, v->size(), dst.size);
  if (!v->empty()) std::memcpy(dst.data, v->data(), v->size());
  return v->size();
}

Result<bool> MemoryStore::exists(std::string_view key) {
  if (key.empty()) return Status::InvalidArgument("empty key");
  return find(key) != nullptr;
}

Status MemoryStore::remove(std::string_view key) {
  if (key.empty()) return Status::InvalidArgument("empty key");
  Value removed;
  Shard& shard = shardFor(key);
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.entries.find(std::string(key));
    if (it == shard.entries.end()) return Status::NotFound("no such key").withKey(std::string(key));
    removed = std::move(it->second);
    shard.entries.erase(it);
  }
  used_bytes_.fetch_sub(removed->size(), std::memory_order_relaxed);
  entries_.fetch_sub(1, std::memory_order_relaxed);
  return Status::Ok();
}

MemoryStoreStats MemoryStore::stats() const {
  MemoryStoreStats s;
  s.capacity_bytes = capacity_bytes_;
  s.used_bytes = used_bytes_.load(std::memory_order_relaxed);
  s.entries = entries_.load(std::memory_order_relaxed);
  s.rejected_full = rejected_full_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace kvdump

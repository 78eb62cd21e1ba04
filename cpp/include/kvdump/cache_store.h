// CacheStore: the one interface every kvdump store implements (memory, files, Mooncake, plug-ins).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kvdump/status.h"

namespace kvdump {

/// A borrowed read-only byte range; the caller keeps the bytes alive for the duration of the call.
struct ByteView {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

/// A borrowed writable byte range; the caller owns it, the store writes into it during the call.
struct MutableByteView {
  uint8_t* data = nullptr;
  size_t size = 0;
};

/// TOO_LARGE naming `key`: a value of `needed` bytes does not fit a caller's `available`-byte buffer.
Status bufferTooSmall(std::string_view key, size_t needed, size_t available);

/// Abstract key/value store of byte buffers. Every method is thread-safe and may be called from many
/// writer threads at once. Ownership: put/batchPut borrow `values` only for the duration of the call
/// (a store that keeps them copies them); get returns bytes the caller owns; getInto writes into a
/// caller-owned buffer. Missing keys are NOT_FOUND; a full store is STORE_FULL; errors carry the key.
class CacheStore {
 public:
  virtual ~CacheStore() = default;

  /// Short human-readable name, e.g. "memory" or "file:///data/kv".
  virtual std::string name() const = 0;

  virtual Status put(std::string_view key, ByteView value) = 0;
  virtual Result<std::vector<uint8_t>> get(std::string_view key) = 0;
  virtual Result<bool> exists(std::string_view key) = 0;
  /// NOT_FOUND when the key was absent.
  virtual Status remove(std::string_view key) = 0;

  /// Copies the value into `dst` and returns its size; TOO_LARGE if `dst` is too small.
  virtual Result<size_t> getInto(std::string_view key, MutableByteView dst);

  /// One status per key, in order. The default loops over put(); stores with a native batch path
  /// (one round trip, one lock acquisition per shard) override it.
  virtual std::vector<Status> batchPut(const std::vector<std::string>& keys, const std::vector<ByteView>& values);
  virtual std::vector<Result<size_t>> batchGetInto(const std::vector<std::string>& keys,
                                                   const std::vector<MutableByteView>& dsts);
  virtual std::vector<Result<bool>> batchExists(const std::vector<std::string>& keys);

  /// Announces host memory that later put/getInto calls will borrow from (the writer's staging
  /// buffers), so that a store with a zero-copy transport (e.g. Mooncake) can register it once. The
  /// default does nothing. The range stays valid until unregisterBuffer(data).
  virtual Status registerBuffer(uint8_t* data, size_t size);
  /// The range registered at `data` is about to be freed; the store must stop using it. Default no-op.
  virtual Status unregisterBuffer(uint8_t* data);
};

}  // namespace kvdump

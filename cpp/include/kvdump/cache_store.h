// CacheStore: the one interface every kvdump store implements (memory, files, Mooncake, plug-ins).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
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

/// Writable memory a store lends for one key's value, from lendSlots() until publishSlots() or
/// abandonSlots(); `token` identifies the loan to the store. A plain value; the store owns the bytes.
struct LentSlot {
  uint8_t* data = nullptr;
  size_t size = 0;
  uint64_t token = 0;
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

  // Store-owned destinations. A store that lends memory lets a writer fill values in place (one
  // copy from the KV cache) instead of handing it a staging buffer to copy again.

  /// True when lendSlots() lends memory; false (the default) means the writer stages and calls batchPut.
  virtual bool lendsMemory() const { return false; }
  /// Lends `size` writable bytes for each key. A lent slot is invisible to every reader until
  /// publishSlots(); an older value of the key stays readable meanwhile. UNSUPPORTED by default;
  /// STORE_FULL (naming the key) when there is no room.
  virtual std::vector<Result<LentSlot>> lendSlots(const std::vector<std::string>& keys, size_t size);
  /// Makes each slot's bytes the value of its key, replacing an older value atomically; the slot is
  /// the store's again. One status per slot; a token the store did not lend is INVALID_ARGUMENT.
  virtual std::vector<Status> publishSlots(const std::vector<LentSlot>& slots);
  /// Takes slots back unpublished: their bytes are never visible to a reader.
  virtual void abandonSlots(const std::vector<LentSlot>& slots);

  /// Calls `reader` with the value of `key` under a read lease: the bytes stay valid and unchanged,
  /// and the key is not evicted, until `reader` returns. Returns the lookup's error or the reader's
  /// status. The default reads with get() into a temporary and lends that.
  virtual Status readLeased(std::string_view key, const std::function<Status(ByteView)>& reader);

  /// The writer will never commit the blocks stored under `keys` in this cycle (their request
  /// failed, or the cycle was aborted): a store that evicts may reclaim them before anything else,
  /// unless a commit record already covers them. Missing keys are ignored. The default does nothing.
  virtual void discard(const std::vector<std::string>& keys);
};

}  // namespace kvdump

// StagingPool: a bounded pool of host buffers that holds every byte in flight between capture and store.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "kvdump/host_memory.h"
#include "kvdump/status.h"

namespace kvdump {

/// Counters of a StagingPool; a plain value snapshot.
struct StagingStats {
  size_t capacity_bytes = 0;
  size_t allocated_bytes = 0;  // held from the allocator, leased or free
  size_t leased_bytes = 0;     // currently handed out
  size_t leased_high_water = 0;
  uint64_t leases = 0;
  uint64_t allocations = 0;    // calls into the allocator (reuse keeps this low)
  uint64_t waits = 0;          // leases that had to wait for bytes to come back
  uint64_t timeouts = 0;       // leases refused after waiting the whole deadline
};

class StagingPool;

/// A leased buffer; returns itself to the pool on destruction. Move-only, not thread-safe itself.
class StagingLease {
 public:
  StagingLease() = default;
  StagingLease(StagingLease&& other) noexcept;
  StagingLease& operator=(StagingLease&& other) noexcept;
  StagingLease(const StagingLease&) = delete;
  StagingLease& operator=(const StagingLease&) = delete;
  ~StagingLease();

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }          // bytes asked for
  size_t capacity() const { return capacity_; }  // bytes of the underlying buffer
  explicit operator bool() const { return data_ != nullptr; }

 private:
  friend class StagingPool;
  StagingLease(StagingPool* pool, size_t slot, uint8_t* data, size_t size, size_t capacity)
      : pool_(pool), slot_(slot), data_(data), size_(size), capacity_(capacity) {}
  void reset();

  StagingPool* pool_ = nullptr;
  size_t slot_ = 0;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

/// Bounds the bytes of host staging memory to `capacity_bytes`. lease() blocks (never spins) until
/// enough bytes are free or the deadline passes (TIMEOUT, counted), refuses a request larger than
/// the whole pool at once (TOO_LARGE) and passes on the allocator's error. Buffers are reused across
/// leases, so a steady state allocates nothing. The allocator and the release callbacks run outside
/// the pool's lock. Thread-safe; must outlive its leases.
class StagingPool {
 public:
  StagingPool(size_t capacity_bytes, HostAllocator allocator);
  ~StagingPool();
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  /// `cancelled`, when given, is polled at every wake-up: once it returns true the wait ends with
  /// CANCELLED. Call wakeWaiters() after making it true so the wait notices at once.
  Result<StagingLease> lease(size_t bytes, std::chrono::nanoseconds timeout,
                             const std::function<bool()>& cancelled = nullptr);
  /// Wakes every lease() waiting for bytes, so each re-checks its `cancelled`.
  void wakeWaiters();
  StagingStats stats() const;
  size_t capacityBytes() const { return capacity_bytes_; }
  /// Frees every buffer not currently leased.
  void trim();

 private:
  friend class StagingLease;
  struct Buffer {
    HostAllocation memory;
    bool leased = false;
  };
  void giveBack(size_t slot);
  /// Leases the best-fitting free buffer, if any.
  bool leaseFreeLocked(size_t bytes, StagingLease* out);
  /// Detaches idle buffers until `bytes` more fit the capacity, reserving them; false if they can't.
  bool reserveLocked(size_t bytes, std::vector<HostAllocation>* to_release);
  StagingLease installLocked(HostAllocation memory, size_t bytes);
  /// The allocator's result; a throwing allocator becomes IO_ERROR, so a reservation is never lost.
  Result<HostAllocation> allocateNoThrow(size_t bytes);

  const size_t capacity_bytes_;
  HostAllocator allocator_;
  mutable std::mutex mu_;
  std::condition_variable returned_cv_;
  std::vector<std::unique_ptr<Buffer>> buffers_;  // slot index is stable; freed slots are nulled
  StagingStats stats_;
};

}  // namespace kvdump

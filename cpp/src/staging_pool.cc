#include "kvdump/staging_pool.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

namespace kvdump {

namespace {

void releaseAll(std::vector<HostAllocation>& memories) {
  for (auto& m : memories) {
    if (m.release) m.release();
  }
  memories.clear();
}

}  // namespace

Result<HostAllocation> StagingPool::allocateNoThrow(size_t bytes) {
  try {
    return allocator_(bytes);
  } catch (const std::exception& e) {
    return Status::IoError("host allocation of " + std::to_string(bytes) + " bytes failed: " + e.what());
  } catch (...) {
    return Status::IoError("host allocation of " + std::to_string(bytes) + " bytes failed");
  }
}

StagingLease::StagingLease(StagingLease&& other) noexcept { *this = std::move(other); }

StagingLease& StagingLease::operator=(StagingLease&& other) noexcept {
  if (this != &other) {
    reset();
    pool_ = std::exchange(other.pool_, nullptr);
    slot_ = other.slot_;
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

StagingLease::~StagingLease() { reset(); }

void StagingLease::reset() {
  if (pool_ != nullptr) pool_->giveBack(slot_);
  pool_ = nullptr;
  data_ = nullptr;
  size_ = capacity_ = 0;
}

StagingPool::StagingPool(size_t capacity_bytes, HostAllocator allocator)
    : capacity_bytes_(capacity_bytes), allocator_(std::move(allocator)) {
  stats_.capacity_bytes = capacity_bytes;
}

StagingPool::~StagingPool() {
  for (auto& b : buffers_) {
    if (b && b->memory.release) b->memory.release();
  }
}

bool StagingPool::leaseFreeLocked(size_t bytes, StagingLease* out) {
  // Best fit among free buffers: the smallest one that is large enough.
  size_t best = buffers_.size();
  for (size_t i = 0; i < buffers_.size(); ++i) {
    const auto& b = buffers_[i];
    if (b && !b->leased && b->memory.size >= bytes &&
        (best == buffers_.size() || b->memory.size < buffers_[best]->memory.size)) {
      best = i;
    }
  }
  if (best == buffers_.size()) return false;
  Buffer& b = *buffers_[best];
  b.leased = true;
  stats_.leased_bytes += b.memory.size;
  stats_.leased_high_water = std::max(stats_.leased_high_water, stats_.leased_bytes);
  ++stats_.leases;
  *out = StagingLease(this, best, b.memory.data, bytes, b.memory.size);
  return true;
}

bool StagingPool::reserveLocked(size_t bytes, std::vector<HostAllocation>* to_release) {
  // No free buffer fits: free idle ones (they are all too small) until a new allocation does.
  for (size_t i = 0; i < buffers_.size() && stats_.allocated_bytes + bytes > capacity_bytes_; ++i) {
    auto& b = buffers_[i];
    if (b && !b->leased) {
      stats_.allocated_bytes -= b->memory.size;
      to_release->push_back(std::move(b->memory));
      b.reset();
    }
  }
  if (stats_.allocated_bytes + bytes > capacity_bytes_) return false;
  stats_.allocated_bytes += bytes;  // reserved while the allocator runs unlocked
  return true;
}

StagingLease StagingPool::installLocked(HostAllocation memory, size_t bytes) {
  ++stats_.allocations;
  auto it = std::find(buffers_.begin(), buffers_.end(), nullptr);
  const auto slot = static_cast<size_t>(it - buffers_.begin());
  if (it == buffers_.end()) buffers_.emplace_back();
  buffers_[slot] = std::make_unique<Buffer>(Buffer{std::move(memory), true});
  Buffer& b = *buffers_[slot];
  stats_.leased_bytes += b.memory.size;
  stats_.leased_high_water = std::max(stats_.leased_high_water, stats_.leased_bytes);
  ++stats_.leases;
  return StagingLease(this, slot, b.memory.data, bytes, b.memory.size);
}

void StagingPool::wakeWaiters() {
  // Taking the lock orders the wake-up after a waiter's check of its predicate.
  { std::lock_guard<std::mutex> lock(mu_); }
  returned_cv_.notify_all();
}

Result<StagingLease> StagingPool::lease(size_t bytes, std::chrono::nanoseconds timeout,
                                        const std::function<bool()>& cancelled) {
  if (bytes > capacity_bytes_) {
    return Status::TooLarge("staging request of " + std::to_string(bytes) + " bytes exceeds the pool's " +
                            std::to_string(capacity_bytes_) + "-byte capacity; raise staging_bytes");
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> lock(mu_);
  bool waited = false;
  bool timed_out = false;
  for (;;) {
    StagingLease out;
    if (leaseFreeLocked(bytes, &out)) return Result<StagingLease>(std::move(out));
    std::vector<HostAllocation> to_release;
    if (reserveLocked(bytes, &to_release)) {
      lock.unlock();
      releaseAll(to_release);
      Result<HostAllocation> memory = allocateNoThrow(bytes);
      lock.lock();
      if (!memory.ok() || memory.value().data == nullptr || memory.value().size < bytes) {
        stats_.allocated_bytes -= bytes;
        lock.unlock();
        returned_cv_.notify_all();  // the reservation may have kept another lease waiting
        if (!memory.ok()) return memory.status();
        if (memory.value().release) memory.value().release();
        return Status::IoError("host allocator returned no memory for " + std::to_string(bytes) + " bytes");
      }
      // Accounted as `bytes` whatever the allocator rounded up to, so the pool never exceeds capacity.
      memory.value().size = bytes;
      return Result<StagingLease>(installLocked(std::move(memory).value(), bytes));
    }
    if (!to_release.empty()) {
      lock.unlock();
      releaseAll(to_release);
      lock.lock();
      continue;
    }
    if (cancelled && cancelled()) return Status::Cancelled("the wait for staging memory was cancelled");
    if (timed_out) {
      ++stats_.timeouts;
      return Status::Timeout("staging pool exhausted: " + std::to_string(stats_.leased_bytes) + " of " +
                             std::to_string(capacity_bytes_) + " bytes leased for the whole deadline, " +
                             std::to_string(bytes) + " needed");
    }
    if (!waited) ++stats_.waits;
    waited = true;
    // After the deadline, one more pass over both ways to get bytes before giving up.
    timed_out = returned_cv_.wait_until(lock, deadline) == std::cv_status::timeout;
  }
}

void StagingPool::giveBack(size_t slot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Buffer& b = *buffers_[slot];
    b.leased = false;
    stats_.leased_bytes -= b.memory.size;
  }
  returned_cv_.notify_all();
}

StagingStats StagingPool::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void StagingPool::trim() {
  std::vector<HostAllocation> to_release;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& b : buffers_) {
      if (b && !b->leased) {
        stats_.allocated_bytes -= b->memory.size;
        to_release.push_back(std::move(b->memory));
        b.reset();
      }
    }
  }
  releaseAll(to_release);
}

}  // namespace kvdump

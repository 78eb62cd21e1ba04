#include "kvdump/staging_pool.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

namespace kvdump {

HostAllocator pageableHostAllocator() {
  return [](size_t bytes) {
    const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, rounded));
    if (p == nullptr) return HostAllocation{};
    return HostAllocation{p, bytes, [p] { std::free(p); }};
  };
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

bool StagingPool::tryLeaseLocked(size_t bytes, StagingLease* out) {
  // Best fit among free buffers: the smallest one that is large enough.
  size_t best = buffers_.size();
  for (size_t i = 0; i < buffers_.size(); ++i) {
    const auto& b = buffers_[i];
    if (b && !b->leased && b->memory.size >= bytes &&
        (best == buffers_.size() || b->memory.size < buffers_[best]->memory.size)) {
      best = i;
    }
  }
  if (best == buffers_.size()) {
    // No free buffer fits. Free the idle ones that don't fit until a new allocation does.
    for (size_t i = 0; i < buffers_.size() && stats_.allocated_bytes + bytes > capacity_bytes_; ++i) {
      auto& b = buffers_[i];
      if (b && !b->leased) {
        stats_.allocated_bytes -= b->memory.size;
        if (b->memory.release) b->memory.release();
        b.reset();
      }
    }
    if (stats_.allocated_bytes + bytes > capacity_bytes_) return false;
    HostAllocation memory = allocator_(bytes);
    if (memory.data == nullptr) return false;
    ++stats_.allocations;
    stats_.allocated_bytes += memory.size;
    auto it = std::find(buffers_.begin(), buffers_.end(), nullptr);
    best = static_cast<size_t>(it - buffers_.begin());
    if (it == buffers_.end()) buffers_.emplace_back();
    buffers_[best] = std::make_unique<Buffer>(Buffer{std::move(memory), false});
  }
  Buffer& b = *buffers_[best];
  b.leased = true;
  stats_.leased_bytes += b.memory.size;
  stats_.leased_high_water = std::max(stats_.leased_high_water, stats_.leased_bytes);
  ++stats_.leases;
  *out = StagingLease(this, best, b.memory.data, bytes, b.memory.size);
  return true;
}

Result<StagingLease> StagingPool::lease(size_t bytes, std::chrono::nanoseconds timeout) {
  if (bytes > capacity_bytes_) {
    return Status::TooLarge("staging request of " + std::to_string(bytes) + " bytes exceeds the pool's " +
                            std::to_string(capacity_bytes_) + "-byte capacity; raise staging_bytes");
  }
  std::unique_lock<std::mutex> lock(mu_);
  StagingLease out;
  if (tryLeaseLocked(bytes, &out)) return Result<StagingLease>(std::move(out));
  ++stats_.waits;
  const bool got = returned_cv_.wait_for(lock, timeout, [&] { return tryLeaseLocked(bytes, &out); });
  if (!got) {
    ++stats_.timeouts;
    return Status::Timeout("staging pool exhausted: " + std::to_string(stats_.leased_bytes) + " of " +
                           std::to_string(capacity_bytes_) + " bytes leased for the whole deadline, " +
                           std::to_string(bytes) + " needed");
  }
  return Result<StagingLease>(std::move(out));
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
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& b : buffers_) {
    if (b && !b->leased) {
      stats_.allocated_bytes -= b->memory.size;
      if (b->memory.release) b->memory.release();
      b.reset();
    }
  }
}

}  // namespace kvdump

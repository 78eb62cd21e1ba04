// The staging pool bounds bytes in flight, reuses buffers, and waits (never spins) with a deadline.
#include "kvdump/staging_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

namespace kvdump {
namespace {

using namespace std::chrono_literals;

TEST(StagingPool, ReusesBuffersAcrossLeases) {
  StagingPool pool(1 << 20, pageableHostAllocator());
  for (int i = 0; i < 10; ++i) {
    auto lease = pool.lease(4096, 1s);
    ASSERT_TRUE(lease.ok());
    EXPECT_EQ(lease.value().size(), 4096u);
    lease.value().data()[4095] = 1;  // writable to the end
  }
  auto s = pool.stats();
  EXPECT_EQ(s.allocations, 1u);
  EXPECT_EQ(s.leases, 10u);
  EXPECT_EQ(s.leased_bytes, 0u);
}

TEST(StagingPool, RequestLargerThanPoolIsTooLarge) {
  StagingPool pool(1000, pageableHostAllocator());
  EXPECT_EQ(pool.lease(1001, 1s).status().code(), StatusCode::kTooLarge);
}

TEST(StagingPool, ExhaustedPoolTimesOutAndCounts) {
  StagingPool pool(1000, pageableHostAllocator());
  auto held = pool.lease(800, 1s);
  ASSERT_TRUE(held.ok());
  auto refused = pool.lease(400, 20ms);
  EXPECT_EQ(refused.status().code(), StatusCode::kTimeout);
  auto s = pool.stats();
  EXPECT_EQ(s.timeouts, 1u);
  EXPECT_EQ(s.waits, 1u);
  EXPECT_LE(s.allocated_bytes, 1000u);
}

TEST(StagingPool, WaiterProceedsWhenBytesReturn) {
  StagingPool pool(1000, pageableHostAllocator());
  auto held = pool.lease(800, 1s);
  ASSERT_TRUE(held.ok());
  std::thread releaser([lease = std::move(held.value())]() mutable {
    std::this_thread::sleep_for(20ms);
    lease = StagingLease();
  });
  auto waited = pool.lease(600, 10s);  // needs the first buffer back (reused, 800 >= 600)
  releaser.join();
  ASSERT_TRUE(waited.ok()) << waited.status().toString();
  EXPECT_EQ(pool.stats().waits, 1u);
}

TEST(StagingPool, IdleBuffersAreFreedToMakeRoomForALargerOne) {
  StagingPool pool(1000, pageableHostAllocator());
  { auto a = pool.lease(300, 1s); ASSERT_TRUE(a.ok()); }
  auto big = pool.lease(900, 1s);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(pool.stats().allocated_bytes, 900u);
}

TEST(StagingPool, ConcurrentLeasesNeverExceedCapacity) {
  constexpr size_t kCapacity = 64 * 1024;
  StagingPool pool(kCapacity, pageableHostAllocator());
  std::atomic<size_t> in_use{0};
  std::atomic<size_t> peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const size_t n = 4096 * static_cast<size_t>(1 + (i + t) % 5);
        auto lease = pool.lease(n, 10s);
        ASSERT_TRUE(lease.ok());
        const size_t now = in_use.fetch_add(lease.value().capacity()) + lease.value().capacity();
        size_t seen = peak.load();
        while (now > seen && !peak.compare_exchange_weak(seen, now)) {}
        in_use.fetch_sub(lease.value().capacity());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(peak.load(), kCapacity);
  EXPECT_LE(pool.stats().leased_high_water, kCapacity);
  EXPECT_EQ(pool.stats().leased_bytes, 0u);
}

TEST(StagingPool, AllocatorErrorIsPassedOnAndItsReservationReturned) {
  bool fail = true;
  StagingPool pool(1000, [&](size_t bytes) -> Result<HostAllocation> {
    if (fail) return Status::IoError("cannot register buffer");
    return pageableHostAllocator()(bytes);
  });
  const auto refused = pool.lease(1000, 10ms);
  EXPECT_EQ(refused.status().code(), StatusCode::kIoError);
  EXPECT_NE(refused.status().message().find("cannot register"), std::string::npos);
  EXPECT_EQ(pool.stats().allocated_bytes, 0u);
  fail = false;
  EXPECT_TRUE(pool.lease(1000, 10ms).ok());
}

TEST(StagingPool, ThrowingAllocatorIsAnErrorAndKeepsNoReservation) {
  bool fail = true;
  StagingPool pool(1000, [&](size_t bytes) -> Result<HostAllocation> {
    if (fail) throw std::runtime_error("pinning failed");
    return pageableHostAllocator()(bytes);
  });
  const auto refused = pool.lease(800, 10ms);
  EXPECT_EQ(refused.status().code(), StatusCode::kIoError);
  EXPECT_NE(refused.status().message().find("pinning failed"), std::string::npos);
  fail = false;
  EXPECT_TRUE(pool.lease(1000, 10ms).ok());  // the failed attempt's 800 bytes came back
}

TEST(StagingPool, AllocatorRunsWithoutThePoolLock) {
  // A slow allocator (pinning, registering with a transport) must not block the pool: here the
  // allocator re-enters the pool, which would deadlock if the lock were held.
  StagingPool* self = nullptr;
  StagingPool pool(1000, [&](size_t bytes) {
    EXPECT_EQ(self->stats().leased_bytes, 0u);
    return pageableHostAllocator()(bytes);
  });
  self = &pool;
  auto lease = pool.lease(100, 10ms);
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(pool.stats().allocated_bytes, 100u);
}

TEST(StagingPool, ReleaseCallbacksRunWithoutThePoolLock) {
  StagingPool* self = nullptr;
  int released = 0;
  StagingPool pool(1000, [&](size_t bytes) -> Result<HostAllocation> {
    auto memory = pageableHostAllocator()(bytes);
    if (!memory.ok()) return memory;
    HostAllocation m = std::move(memory).value();
    auto inner = m.release;
    m.release = [&, inner] {
      EXPECT_GE(self->stats().capacity_bytes, 0u);
      ++released;
      inner();
    };
    return m;
  });
  self = &pool;
  { ASSERT_TRUE(pool.lease(600, 10ms).ok()); }
  { ASSERT_TRUE(pool.lease(900, 10ms).ok()); }  // the idle 600-byte buffer is freed to fit this one
  EXPECT_EQ(released, 1);
  pool.trim();
  EXPECT_EQ(released, 2);
}

}  // namespace
}  // namespace kvdump

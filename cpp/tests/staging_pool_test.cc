// The staging pool bounds bytes in flight, reuses buffers, and waits (never spins) with a deadline.
#include "kvdump/staging_pool.h"

#include <gtest/gtest.h>

#include <atomic>
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

TEST(StagingPool, FailingAllocatorIsATimeoutNotACrash) {
  StagingPool pool(1000, [](size_t) { return HostAllocation{}; });
  EXPECT_EQ(pool.lease(10, 10ms).status().code(), StatusCode::kTimeout);
}

}  // namespace
}  // namespace kvdump

#include "kvdump/latency_histogram.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace kvdump {
namespace {

TEST(LatencyHistogram, PercentilesWithinBucketResolution) {
  LatencyHistogram h;
  for (uint64_t i = 1; i <= 1000; ++i) h.record(i * 1000);  // 1..1000 us
  auto s = h.summary();
  EXPECT_EQ(s.count, 1000u);
  EXPECT_NEAR(s.mean_us, 500.5, 0.01);
  EXPECT_NEAR(s.p50_us, 500, 500 * 0.125);
  EXPECT_NEAR(s.p99_us, 990, 990 * 0.125);
  EXPECT_DOUBLE_EQ(s.max_us, 1000);
  h.reset();
  EXPECT_EQ(h.summary().count, 0u);
}

TEST(LatencyHistogram, ConcurrentRecordsAreAllCounted) {
  LatencyHistogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < 10000; ++i) h.record(static_cast<uint64_t>(t * 100 + i));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(h.summary().count, 40000u);
}

}  // namespace
}  // namespace kvdump

// Many cycles with several submitting threads. Asserts only what the design guarantees: every task
// runs exactly once per cycle and the counts add up; it assumes no order between tasks.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "kvdump/async_writer.h"
#include "test_support.h"

namespace kvdump {
namespace {

TEST(WriterStress, ManyCyclesManySubmittersEveryTaskRunsOnce) {
  constexpr int kCycles = 200;
  constexpr int kSubmitters = 3;
  constexpr int kPerSubmitter = 20;
  constexpr int kTasks = kSubmitters * kPerSubmitter;
  AsyncWriter w({4, 16});  // small queue so submitters also exercise the blocking path
  uint64_t expected_failed = 0;
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    ASSERT_TRUE(w.init().ok());
    // One slot per task, each written by exactly one worker: no shared container is mutated.
    auto hits = std::make_shared<std::vector<std::atomic<int>>>(kTasks);
    std::vector<std::thread> submitters;
    for (int s = 0; s < kSubmitters; ++s) {
      submitters.emplace_back([&, s] {
        for (int i = 0; i < kPerSubmitter; ++i) {
          const int id = s * kPerSubmitter + i;
          Status st = w.submit(
              [hits, id, cycle] {
                (*hits)[static_cast<size_t>(id)].fetch_add(1, std::memory_order_relaxed);
                return (id + cycle) % 13 == 0 ? Status::IoError("planned") : Status::Ok();
              },
              {"t", id, "req-" + std::to_string(s)}, testing::kLong);
          ASSERT_TRUE(st.ok()) << st.toString();
        }
      });
    }
    for (auto& t : submitters) t.join();
    for (int id = 0; id < kTasks; ++id) expected_failed += (id + cycle) % 13 == 0;
    CycleReport report;
    Status st = w.waitAllDone(testing::kLong, &report);
    ASSERT_NE(st.code(), StatusCode::kTimeout);
    ASSERT_EQ(report.submitted, static_cast<uint64_t>(kTasks));
    ASSERT_EQ(report.completed + report.failed, static_cast<uint64_t>(kTasks));
    for (int id = 0; id < kTasks; ++id) ASSERT_EQ((*hits)[static_cast<size_t>(id)].load(), 1) << id;
    if (cycle % 50 == 49) {
      // Interleave aborts: open a cycle, queue work, abort, and check the writer recovers.
      ASSERT_TRUE(w.init().ok());
      for (int i = 0; i < 8; ++i) ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"a"}).ok());
      AbortReport r;
      ASSERT_TRUE(w.abort(&r).ok());
      const WriterStats after = w.stats();
      ASSERT_EQ(after.submitted, after.completed + after.failed + after.cancelled);
    }
  }
  WriterStats s = w.stats();
  EXPECT_EQ(s.failed, expected_failed);
  EXPECT_EQ(s.cycles, static_cast<uint64_t>(kCycles));
  EXPECT_EQ(s.submitted, s.completed + s.failed + s.cancelled);
  EXPECT_LE(s.queue_high_water, 16u);
  EXPECT_EQ(w.state(), WriterState::kIdle);
}

TEST(WriterStress, ConcurrentStatsReadersDuringCycles) {
  AsyncWriter w({2, 32});
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop.load()) {
      WriterStats s = w.stats();
      ASSERT_LE(s.completed + s.failed, s.submitted);
      (void)w.state();
    }
  });
  for (int cycle = 0; cycle < 100; ++cycle) {
    ASSERT_TRUE(w.init().ok());
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"t"}).ok());
    ASSERT_TRUE(w.waitAllDone(testing::kLong).ok());
  }
  stop = true;
  reader.join();
  EXPECT_EQ(w.stats().completed, 1000u);
}

}  // namespace
}  // namespace kvdump

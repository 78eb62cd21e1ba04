// Abort with work both queued and running; per-request cancellation; aborting under a waiting barrier.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>

#include "kvdump/async_writer.h"
#include "test_support.h"

namespace kvdump {
namespace {

using namespace std::chrono_literals;
using testing::Gate;
using testing::Latch;

TEST(WriterAbort, CancelsQueuedWaitsForRunningReleasesCaptures) {
  constexpr int kThreads = 2;
  AsyncWriter w({kThreads, 64});
  Gate gate;
  Latch started(kThreads);
  auto captured = std::make_shared<int>(0);
  std::atomic<int> ran{0};
  ASSERT_TRUE(w.init().ok());
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(w.submit(
                     [&, captured] {
                       started.countDown();
                       gate.wait();
                       ++ran;
                       return Status::Ok();
                     },
                     {"t", i})
                    .ok());
  }
  ASSERT_TRUE(started.waitFor(testing::kLong));
  std::thread opener([&] {
    std::this_thread::sleep_for(20ms);
    gate.open();
  });
  AbortReport r;
  ASSERT_TRUE(w.abort(&r).ok());
  opener.join();
  EXPECT_EQ(r.finished_running, static_cast<uint64_t>(kThreads));
  EXPECT_EQ(r.cancelled, static_cast<uint64_t>(10 - kThreads));
  EXPECT_EQ(ran.load(), kThreads);  // cancelled tasks never ran
  EXPECT_EQ(captured.use_count(), 1);  // every closure, run or cancelled, was destroyed
  EXPECT_EQ(w.state(), WriterState::kIdle);
  EXPECT_EQ(w.stats().cancelled, static_cast<uint64_t>(10 - kThreads));
  EXPECT_EQ(w.stats().aborts, 1u);
}

TEST(WriterAbort, ReportsFailuresOfTheAbortedCycle) {
  AsyncWriter w({1, 8});
  ASSERT_TRUE(w.init().ok());
  Latch done(1);
  ASSERT_TRUE(w.submit([&] { done.countDown(); return Status::IoError("disk"); }, {"bad", 1}).ok());
  ASSERT_TRUE(done.waitFor(testing::kLong));
  AbortReport r;
  ASSERT_TRUE(w.abort(&r).ok());
  EXPECT_EQ(r.failed, 1u);
  ASSERT_TRUE(r.first_failure);
  EXPECT_EQ(r.first_failure->label.layer, 1);
  // The aborted cycle's failure does not leak into the next one.
  ASSERT_TRUE(w.init().ok());
  EXPECT_TRUE(w.waitAllDone().ok());
}

TEST(WriterAbort, WaiterOnAnotherThreadGetsCancelled) {
  AsyncWriter w({1, 8});
  Gate gate;
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([&] { gate.wait(); return Status::Ok(); }, {"slow"}).ok());
  ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"queued"}).ok());
  Status waited;
  std::thread waiter([&] { waited = w.waitAllDone(testing::kLong); });
  while (w.state() != WriterState::kDraining) std::this_thread::sleep_for(1ms);
  std::thread opener([&] {
    std::this_thread::sleep_for(20ms);
    gate.open();
  });
  ASSERT_TRUE(w.abort().ok());
  waiter.join();
  opener.join();
  EXPECT_EQ(waited.code(), StatusCode::kCancelled);
  EXPECT_EQ(w.state(), WriterState::kIdle);
}

TEST(WriterAbort, CancelRequestDropsOnlyThatRequest) {
  AsyncWriter w({1, 64});
  Gate gate;
  std::atomic<int> ran_a{0}, ran_b{0};
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([&] { gate.wait(); return Status::Ok(); }, {"blocker", -1, "other"}).ok());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(w.submit([&] { ++ran_a; return Status::Ok(); }, {"a", i, "req-a"}).ok());
    ASSERT_TRUE(w.submit([&] { ++ran_b; return Status::Ok(); }, {"b", i, "req-b"}).ok());
  }
  EXPECT_EQ(w.cancelRequest("req-a"), 5u);
  gate.open();
  CycleReport report;
  ASSERT_TRUE(w.waitAllDone(testing::kLong, &report).ok());
  EXPECT_EQ(ran_a.load(), 0);
  EXPECT_EQ(ran_b.load(), 5);
  EXPECT_EQ(report.cancelled, 5u);
  EXPECT_EQ(report.completed, 6u);
}

}  // namespace
}  // namespace kvdump

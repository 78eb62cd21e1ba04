// Deadlines: a barrier that cannot finish in time and a submit that cannot find queue space.
#include <gtest/gtest.h>

#include <thread>

#include "kvdump/async_writer.h"
#include "test_support.h"

namespace kvdump {
namespace {

using namespace std::chrono_literals;
using testing::Gate;

TEST(WriterDeadline, WaitTimesOutAndTheCycleStaysOpen) {
  AsyncWriter w({1, 8});
  Gate gate;
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([&] { gate.wait(); return Status::Ok(); }, {"slow"}).ok());
  Status s = w.waitAllDone(30ms);
  EXPECT_EQ(s.code(), StatusCode::kTimeout);
  EXPECT_EQ(w.state(), WriterState::kAccepting);
  gate.open();
  CycleReport report;
  EXPECT_TRUE(w.waitAllDone(testing::kLong, &report).ok());
  EXPECT_EQ(report.completed, 1u);
  EXPECT_EQ(w.state(), WriterState::kIdle);
}

TEST(WriterDeadline, TimeoutThenAbortReleasesEverything) {
  AsyncWriter w({1, 8});
  Gate gate;
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([&] { gate.wait(); return Status::Ok(); }, {"slow"}).ok());
  ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"queued"}).ok());
  EXPECT_EQ(w.waitAllDone(10ms).code(), StatusCode::kTimeout);
  std::thread opener([&] {
    std::this_thread::sleep_for(20ms);
    gate.open();
  });
  AbortReport r;
  ASSERT_TRUE(w.abort(&r).ok());
  opener.join();
  EXPECT_EQ(r.cancelled, 1u);
  EXPECT_EQ(r.finished_running, 1u);
  EXPECT_EQ(w.state(), WriterState::kIdle);
}

TEST(WriterDeadline, FullQueueBlocksSubmitThenTimesOut) {
  AsyncWriter w({1, 2});
  Gate gate;
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([&] { gate.wait(); return Status::Ok(); }, {"running"}).ok());
  // Wait until the worker picked it up so the queue holds exactly what we add next.
  while (w.stats().running == 0) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"q1"}).ok());
  ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"q2"}).ok());
  const auto start = std::chrono::steady_clock::now();
  Status s = w.submit([] { return Status::Ok(); }, {"overflow"}, 40ms);
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(s.code(), StatusCode::kTimeout);
  EXPECT_NE(s.message().find("overflow"), std::string::npos);
  EXPECT_GE(waited, 40ms);  // it blocked rather than failing at once
  gate.open();
  CycleReport report;
  ASSERT_TRUE(w.waitAllDone(testing::kLong, &report).ok());
  EXPECT_EQ(report.completed, 3u);  // the refused task was never queued, and said so
  EXPECT_EQ(w.stats().rejected, 1u);
}

TEST(WriterDeadline, BlockedSubmitProceedsWhenSpaceFrees) {
  AsyncWriter w({1, 1});
  Gate gate;
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([&] { gate.wait(); return Status::Ok(); }, {"running"}).ok());
  while (w.stats().running == 0) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"fills queue"}).ok());
  std::thread opener([&] {
    std::this_thread::sleep_for(20ms);
    gate.open();
  });
  EXPECT_TRUE(w.submit([] { return Status::Ok(); }, {"waits for space"}, testing::kLong).ok());
  opener.join();
  CycleReport report;
  ASSERT_TRUE(w.waitAllDone(testing::kLong, &report).ok());
  EXPECT_EQ(report.completed, 3u);
}

TEST(WriterDeadline, BlockedSubmitIsReleasedByAbort) {
  AsyncWriter w({1, 1});
  Gate gate;
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([&] { gate.wait(); return Status::Ok(); }, {"running"}).ok());
  while (w.stats().running == 0) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"fills queue"}).ok());
  Status blocked;
  std::thread submitter([&] { blocked = w.submit([] { return Status::Ok(); }, {"blocked"}, testing::kLong); });
  std::this_thread::sleep_for(20ms);
  std::thread opener([&] {
    std::this_thread::sleep_for(20ms);
    gate.open();
  });
  ASSERT_TRUE(w.abort().ok());
  submitter.join();
  opener.join();
  EXPECT_EQ(blocked.code(), StatusCode::kLifecycle);
}

}  // namespace
}  // namespace kvdump

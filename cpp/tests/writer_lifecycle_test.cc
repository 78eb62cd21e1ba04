// Each lifecycle rule and each misuse of it; after every misuse the writer must still work.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <string>

#include "kvdump/async_writer.h"
#include "test_support.h"

namespace kvdump {
namespace {

Task ok() {
  return [] { return Status::Ok(); };
}

void runOneGoodCycle(AsyncWriter& w) {
  ASSERT_TRUE(w.init().ok());
  std::atomic<int> ran{0};
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(w.submit([&] { ++ran; return Status::Ok(); }, {"t", i, "r"}).ok());
  }
  ASSERT_TRUE(w.waitAllDone().ok());
  EXPECT_EQ(ran.load(), 5);
  EXPECT_EQ(w.state(), WriterState::kIdle);
}

TEST(WriterLifecycle, StatesFollowInitAndWait) {
  AsyncWriter w({2, 8});
  EXPECT_EQ(w.state(), WriterState::kIdle);
  ASSERT_TRUE(w.init().ok());
  EXPECT_EQ(w.state(), WriterState::kAccepting);
  CycleReport report;
  ASSERT_TRUE(w.waitAllDone(std::nullopt, &report).ok());
  EXPECT_EQ(w.state(), WriterState::kIdle);
  EXPECT_EQ(report.submitted, 0u);
  EXPECT_STREQ(writerStateName(WriterState::kAccepting), "accepting");
}

TEST(WriterLifecycle, SubmitBeforeInitIsLifecycleError) {
  AsyncWriter w({2, 8});
  Status s = w.submit(ok(), {"early"});
  EXPECT_EQ(s.code(), StatusCode::kLifecycle);
  EXPECT_NE(s.message().find("before init"), std::string::npos);
  EXPECT_EQ(w.stats().rejected, 1u);
  runOneGoodCycle(w);
}

TEST(WriterLifecycle, DoubleInitIsLifecycleError) {
  AsyncWriter w({2, 8});
  ASSERT_TRUE(w.init().ok());
  EXPECT_EQ(w.init().code(), StatusCode::kLifecycle);
  EXPECT_EQ(w.state(), WriterState::kAccepting);  // the open cycle is untouched
  ASSERT_TRUE(w.waitAllDone().ok());
  runOneGoodCycle(w);
}

TEST(WriterLifecycle, WaitWithoutInitIsLifecycleError) {
  AsyncWriter w({2, 8});
  EXPECT_EQ(w.waitAllDone().code(), StatusCode::kLifecycle);
  runOneGoodCycle(w);
  EXPECT_EQ(w.waitAllDone().code(), StatusCode::kLifecycle);  // already closed
}

TEST(WriterLifecycle, SubmitAfterAbortIsLifecycleError) {
  AsyncWriter w({2, 8});
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.abort().ok());
  Status s = w.submit(ok(), {"late"});
  EXPECT_EQ(s.code(), StatusCode::kLifecycle);
  EXPECT_NE(s.message().find("after abort"), std::string::npos);
  runOneGoodCycle(w);
}

TEST(WriterLifecycle, SubmitAfterWaitIsLifecycleError) {
  AsyncWriter w({2, 8});
  runOneGoodCycle(w);
  EXPECT_EQ(w.submit(ok(), {"after"}).code(), StatusCode::kLifecycle);
}

TEST(WriterLifecycle, EmptyTaskIsInvalidArgument) {
  AsyncWriter w({2, 8});
  ASSERT_TRUE(w.init().ok());
  EXPECT_EQ(w.submit(Task{}, {"empty"}).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(w.waitAllDone().ok());
}

TEST(WriterLifecycle, BarrierFromInsideATaskIsRefusedNotDeadlocked) {
  AsyncWriter w({1, 8});
  ASSERT_TRUE(w.init().ok());
  Status inner_wait, inner_abort;
  ASSERT_TRUE(w.submit([&] {
                 inner_wait = w.waitAllDone();
                 inner_abort = w.abort();
                 return Status::Ok();
               },
               {"reentrant"})
                  .ok());
  ASSERT_TRUE(w.waitAllDone().ok());
  EXPECT_EQ(inner_wait.code(), StatusCode::kLifecycle);
  EXPECT_EQ(inner_abort.code(), StatusCode::kLifecycle);
}

TEST(WriterLifecycle, AbortWhenIdleIsANoOp) {
  AsyncWriter w({2, 8});
  AbortReport r;
  ASSERT_TRUE(w.abort(&r).ok());
  EXPECT_EQ(r.cancelled, 0u);
  EXPECT_EQ(w.stats().aborts, 0u);
  runOneGoodCycle(w);
}

TEST(WriterLifecycle, ThreadCountAndCapacityAreOptions) {
  AsyncWriter w({3, 17});
  EXPECT_EQ(w.numThreads(), 3u);
  EXPECT_EQ(w.stats().queue_capacity, 17u);
  AsyncWriter d;
  EXPECT_EQ(d.numThreads(), defaultNumThreads());
  EXPECT_GE(defaultNumThreads(), 1u);
  EXPECT_LE(defaultNumThreads(), 8u);
}

TEST(WriterLifecycle, OptionValidationRejectsNonsense) {
  WriterOptions zero_capacity;
  zero_capacity.queue_capacity = 0;
  EXPECT_EQ(validateWriterOptions(zero_capacity).code(), StatusCode::kInvalidArgument);
  WriterOptions huge;
  huge.num_threads = 100000;
  EXPECT_EQ(validateWriterOptions(huge).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(validateWriterOptions(WriterOptions{}).ok());
}

TEST(WriterLifecycle, StatsCountSubmitsCompletionsAndBarriers) {
  AsyncWriter w({2, 8});
  runOneGoodCycle(w);
  runOneGoodCycle(w);
  WriterStats s = w.stats();
  EXPECT_EQ(s.submitted, 10u);
  EXPECT_EQ(s.completed, 10u);
  EXPECT_EQ(s.failed, 0u);
  EXPECT_EQ(s.cycles, 2u);
  EXPECT_EQ(s.submit_latency.count, 10u);
  EXPECT_EQ(s.task_latency.count, 10u);
  EXPECT_EQ(s.barrier_wait.count, 2u);
  EXPECT_GE(s.queue_high_water, 1u);
  EXPECT_LE(s.queue_high_water, 5u);
}

TEST(WriterLifecycle, ARunningTaskReadsItsRequestFromItsLabel) {
  WriterOptions o;
  o.num_threads = 2;
  AsyncWriter w(o);
  std::mutex mu;
  std::multiset<std::string> seen;
  auto record = [&](TaskControl& control) {
    std::lock_guard<std::mutex> lock(mu);
    seen.insert(control.request());
    return Status::Ok();
  };
  ASSERT_TRUE(w.init().ok());
  const std::string long_id(64, 'r');  // beyond a std::string's inline capacity
  ASSERT_TRUE(w.submit(ControlledTask(record), TaskLabel{"", 0, long_id, "write"}).ok());
  ASSERT_TRUE(w.submit(ControlledTask(record), TaskLabel{"", 1, "req-2", "write"}).ok());
  ASSERT_TRUE(w.submit(ControlledTask(record), TaskLabel{"no request", 2, "", nullptr}).ok());
  ASSERT_TRUE(w.waitAllDone(testing::kLong).ok());
  EXPECT_EQ(seen, (std::multiset<std::string>{long_id, "req-2", ""}));
  EXPECT_EQ(TaskControl().request(), "");  // a control no writer ran reads as no request
}

}  // namespace
}  // namespace kvdump

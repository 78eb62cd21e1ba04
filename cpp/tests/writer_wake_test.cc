// Who wakes a worker: the submitting thread only when no worker is running (or a task already
// waits), the workers themselves for a backlog, and the barrier for whatever is left. None of it
// may leave a task unrun while a worker sits idle at the barrier.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>

#include "kvdump/async_writer.h"
#include "test_support.h"

namespace kvdump {
namespace {

using std::chrono::seconds;
using testing::Gate;
using testing::Latch;

constexpr auto kHangGuard = std::chrono::milliseconds(30000);  // only ever reached by a bug

WriterOptions threads(size_t n) {
  WriterOptions o;
  o.num_threads = n;
  return o;
}

// Opens a cycle and returns once its first task is running, blocked until `may_finish` opens.
void startBlockedTask(AsyncWriter& w, Gate& may_finish) {
  ASSERT_TRUE(w.init().ok());
  Latch running(1);
  ASSERT_TRUE(w.submit([&running, &may_finish] { running.countDown(); may_finish.wait(); return Status::Ok(); },
                       {"first", 0, ""}).ok());
  ASSERT_TRUE(running.waitFor(kHangGuard));
}

TEST(WriterWake, ATaskQueuedBehindABusyWorkerRunsOnAnIdlePeerByTheBarrier) {
  AsyncWriter w(threads(2));
  // The first task finishes only once the second has run: if nobody woke the idle peer for the
  // second, the barrier would wait for ever.
  Gate first_may_finish;
  startBlockedTask(w, first_may_finish);
  ASSERT_TRUE(w.submit([&] { first_may_finish.open(); return Status::Ok(); }, {"second", 1, ""}).ok());
  CycleReport report;
  Status done = w.waitAllDone(seconds(30), &report);
  ASSERT_TRUE(done.ok()) << done.toString();
  EXPECT_EQ(report.completed, 2u);
}

TEST(WriterWake, ABacklogBehindABusyWorkerIsSharedOutAmongIdlePeers) {
  AsyncWriter w(threads(3));
  Gate first_may_finish;
  startBlockedTask(w, first_may_finish);
  // Both queued tasks wait until both run at once: only two distinct idle workers can do that,
  // and no barrier has started to wake them.
  Latch both_running(2);
  auto meet = [&] {
    both_running.countDown();
    return both_running.waitFor(kHangGuard) ? Status::Ok() : Status::Internal("the peers never ran together");
  };
  ASSERT_TRUE(w.submit(meet, {"second", 1, ""}).ok());
  ASSERT_TRUE(w.submit(meet, {"third", 2, ""}).ok());
  EXPECT_TRUE(both_running.waitFor(kHangGuard));
  first_may_finish.open();
  CycleReport report;
  Status done = w.waitAllDone(seconds(30), &report);
  ASSERT_TRUE(done.ok()) << done.toString();
  EXPECT_EQ(report.completed, 3u);
  EXPECT_EQ(report.failed, 0u);
}

// Runs `cycles` cycles of `tasks` trivial tasks each and checks that every task ran by the barrier.
void everyTaskRunsInEveryCycle(const WriterOptions& options, int cycles, int tasks) {
  AsyncWriter w(options);
  for (int cycle = 0; cycle < cycles; ++cycle) {
    ASSERT_TRUE(w.init().ok());
    std::atomic<int> ran{0};
    for (int i = 0; i < tasks; ++i) ASSERT_TRUE(w.submit([&] { ++ran; return Status::Ok(); }, {"t", i, ""}).ok());
    Status done = w.waitAllDone(seconds(30));
    ASSERT_TRUE(done.ok()) << done.toString();
    const auto poll = options.idle_poll.value_or(std::chrono::microseconds(0));
    ASSERT_EQ(ran.load(), tasks) << options.num_threads << " threads, " << poll.count() << " us poll, cycle " << cycle;
  }
}

TEST(WriterWake, EveryTaskOfManyCyclesRunsWithOneWorkerOrMany) {
  for (size_t n : {1u, 2u, 4u}) everyTaskRunsInEveryCycle(threads(n), 50, 16);
}

TEST(WriterWake, WithPollingOrWakingEveryTaskRunsBeforeTheBarrierReturns) {
  for (auto poll : {std::chrono::microseconds(0), std::chrono::microseconds(200), std::chrono::microseconds(50000)}) {
    WriterOptions o = threads(2);
    o.idle_poll = poll;
    everyTaskRunsInEveryCycle(o, 20, 8);
  }
}

TEST(WriterWake, AnUnsetIdlePollMeansWakeUpsAndAGivenOneIsKept) {
  EXPECT_EQ(AsyncWriter(WriterOptions{}).stats().idle_poll.count(), 0);
  WriterOptions o;
  o.idle_poll = std::chrono::microseconds(200);
  EXPECT_EQ(AsyncWriter(o).stats().idle_poll.count(), 200);
}

TEST(WriterWake, IdlePollIsValidated) {
  WriterOptions o;
  o.idle_poll = std::chrono::microseconds(-1);
  EXPECT_EQ(validateWriterOptions(o).code(), StatusCode::kInvalidArgument);
  o.idle_poll = std::chrono::seconds(2);
  EXPECT_EQ(validateWriterOptions(o).code(), StatusCode::kInvalidArgument);
  o.idle_poll = std::chrono::seconds(1);
  EXPECT_TRUE(validateWriterOptions(o).ok());
}

TEST(WriterWake, ALabelWithoutTextIsNamedFromItsParts) {
  EXPECT_EQ((TaskLabel{"", 3, "req-17", "write"}.text()), "write layer 3 of request req-17");
  EXPECT_EQ((TaskLabel{"", 3, "", "load"}.text()), "load layer 3");
  EXPECT_EQ((TaskLabel{"given", 3, "r", "write"}.text()), "given");
  EXPECT_EQ((TaskLabel{"", -1, "", nullptr}.text()), "task");
}

}  // namespace
}  // namespace kvdump

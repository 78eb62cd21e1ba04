// Deadlines that hold whatever a task does: abort() abandons tasks stuck past its deadline, never
// lets them touch caller memory again, replaces their threads, and ignores what they finish later.
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

// Waits for a condition another thread brings about; the bound only keeps a broken build from hanging.
template <typename Predicate>
bool eventually(Predicate predicate) {
  const auto deadline = std::chrono::steady_clock::now() + testing::kLong;
  while (!predicate()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

WriterOptions options(size_t threads) {
  WriterOptions o;
  o.num_threads = threads;
  o.queue_capacity = 64;
  return o;
}

TEST(WriterAbandon, AbortReturnsWhileATaskIsStillStuckAndReportsIt) {
  AsyncWriter w(options(1));
  auto stuck = std::make_shared<Gate>();
  auto started = std::make_shared<Latch>(1);
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([stuck, started](TaskControl& control) {
                 control.setActivity("ns/key-being-put");
                 started->countDown();
                 stuck->wait();
                 return Status::Ok();
               },
               {"write layer 3 of request r", 3, "r"})
                  .ok());
  ASSERT_TRUE(started->waitFor(testing::kLong));
  AbortReport report;
  // If abort waited for the task, this would never return: the gate opens only afterwards.
  ASSERT_TRUE(w.abort(&report, 0ms).ok());
  EXPECT_EQ(report.abandoned, 1u);
  EXPECT_EQ(report.finished_running, 0u);
  ASSERT_TRUE(report.first_abandoned.has_value());
  EXPECT_EQ(report.first_abandoned->status.code(), StatusCode::kTimeout);
  EXPECT_EQ(report.first_abandoned->status.key(), "ns/key-being-put");
  EXPECT_EQ(report.first_abandoned->label.request, "r");
  EXPECT_EQ(w.state(), WriterState::kIdle);
  EXPECT_EQ(w.stats().threads_in_abandoned_calls, 1u);

  // The pool keeps serving on a replacement thread while the stuck one is still inside its call.
  ASSERT_TRUE(w.init().ok());
  std::atomic<int> ran{0};
  ASSERT_TRUE(w.submit([&] { ++ran; return Status::Ok(); }, {"after", -1}).ok());
  ASSERT_TRUE(w.waitAllDone(testing::kLong).ok());
  EXPECT_EQ(ran.load(), 1);

  stuck->open();
  ASSERT_TRUE(eventually([&] { return w.stats().threads_in_abandoned_calls == 0; }));
  EXPECT_EQ(w.stats().abandoned, 1u);
}

TEST(WriterAbandon, AnAbandonedTaskNeverEntersCallerMemoryAgain) {
  AsyncWriter w(options(1));
  auto proceed = std::make_shared<Gate>();
  auto started = std::make_shared<Latch>(1);
  auto entered = std::make_shared<std::atomic<int>>(-1);
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([=](TaskControl& control) {
                 started->countDown();
                 proceed->wait();
                 entered->store(control.enterCallerMemory() ? 1 : 0);
                 return Status::Ok();
               },
               {"t", 0})
                  .ok());
  ASSERT_TRUE(started->waitFor(testing::kLong));
  AbortReport report;
  ASSERT_TRUE(w.abort(&report, 0ms).ok());
  ASSERT_EQ(report.abandoned, 1u);
  proceed->open();
  ASSERT_TRUE(eventually([&] { return entered->load() != -1; }));
  EXPECT_EQ(entered->load(), 0);
  ASSERT_TRUE(eventually([&] { return w.stats().threads_in_abandoned_calls == 0; }));
}

TEST(WriterAbandon, AbortWaitsForACallerMemorySectionInProgress) {
  AsyncWriter w(options(1));
  auto in_section = std::make_shared<Latch>(1);
  auto leave = std::make_shared<Gate>();
  auto left = std::make_shared<std::atomic<bool>>(false);
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([=](TaskControl& control) {
                 CallerMemoryScope section(control);
                 in_section->countDown();
                 leave->wait();
                 left->store(true);
                 return Status::Ok();
               },
               {"gather", 0})
                  .ok());
  ASSERT_TRUE(in_section->waitFor(testing::kLong));
  std::atomic<bool> left_when_abort_returned{false};
  std::thread aborter([&] {
    AbortReport report;
    (void)w.abort(&report, 0ms);
    left_when_abort_returned = left->load();
  });
  // The abort has given the task up (counted) but must still be waiting for the section to end.
  ASSERT_TRUE(eventually([&] { return w.stats().abandoned == 1; }));
  leave->open();
  aborter.join();
  EXPECT_TRUE(left_when_abort_returned.load());
}

TEST(WriterAbandon, WhatAnAbandonedTaskFinishesIsNotRecorded) {
  AsyncWriter w(options(1));
  auto proceed = std::make_shared<Gate>();
  auto started = std::make_shared<Latch>(1);
  auto recorded = std::make_shared<std::atomic<int>>(-1);
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([=](TaskControl& control) {
                 started->countDown();
                 proceed->wait();
                 recorded->store(control.runIfLive([] {}) ? 1 : 0);
                 return Status::IoError("late failure that must not reach any later cycle");
               },
               {"t", 0, "r"})
                  .ok());
  ASSERT_TRUE(started->waitFor(testing::kLong));
  ASSERT_TRUE(w.abort(nullptr, 0ms).ok());
  ASSERT_TRUE(w.init().ok());
  proceed->open();
  ASSERT_TRUE(eventually([&] { return recorded->load() != -1; }));
  EXPECT_EQ(recorded->load(), 0);
  CycleReport report;
  EXPECT_TRUE(w.waitAllDone(testing::kLong, &report).ok());
  EXPECT_EQ(report.failed, 0u);
}

TEST(WriterAbandon, ReplacementsStopAtTheBoundAndResumeWhenCallsReturn) {
  WriterOptions o = options(1);
  o.max_abandoned_threads = 1;
  AsyncWriter w(o);
  auto stuck = std::make_shared<Gate>();
  for (int cycle = 0; cycle < 2; ++cycle) {
    auto started = std::make_shared<Latch>(1);
    ASSERT_TRUE(w.init().ok());
    ASSERT_TRUE(w.submit([stuck, started] {
                   started->countDown();
                   stuck->wait();
                   return Status::Ok();
                 },
                 {"stuck", cycle})
                    .ok());
    ASSERT_TRUE(started->waitFor(testing::kLong));
    ASSERT_TRUE(w.abort(nullptr, 0ms).ok());
  }
  // Two threads are stuck, over the bound of one: no thread serves the queue, yet the barrier's
  // deadline still holds and abort still ends the cycle.
  EXPECT_EQ(w.stats().threads_in_abandoned_calls, 2u);
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"queued", 0}).ok());
  EXPECT_EQ(w.waitAllDone(0ms).code(), StatusCode::kTimeout);
  AbortReport report;
  ASSERT_TRUE(w.abort(&report, 0ms).ok());
  EXPECT_EQ(report.cancelled, 1u);
  stuck->open();
  ASSERT_TRUE(eventually([&] { return w.stats().threads_in_abandoned_calls == 0; }));
  ASSERT_TRUE(w.init().ok());
  std::atomic<int> ran{0};
  ASSERT_TRUE(w.submit([&] { ++ran; return Status::Ok(); }, {"after", 0}).ok());
  ASSERT_TRUE(w.waitAllDone(testing::kLong).ok());
  EXPECT_EQ(ran.load(), 1);
}

TEST(WriterAbandon, DestructorWithAStuckTaskReturnsAtItsDeadline) {
  auto stuck = std::make_shared<Gate>();
  auto started = std::make_shared<Latch>(1);
  AbortReport seen;
  {
    WriterOptions o = options(1);
    o.abort_timeout = 0ms;
    o.on_destroy_report = [&](const AbortReport& r) { seen = r; };
    AsyncWriter w(o);
    ASSERT_TRUE(w.init().ok());
    ASSERT_TRUE(w.submit([stuck, started] {
                   started->countDown();
                   stuck->wait();
                   return Status::Ok();
                 },
                 {"stuck", 0})
                    .ok());
    ASSERT_TRUE(started->waitFor(testing::kLong));
  }  // would hang here if the destructor joined the stuck thread
  EXPECT_EQ(seen.abandoned, 1u);
  stuck->open();  // the detached thread finishes on the shared core and exits
}

TEST(WriterAbandon, BarrierTimeoutNamesTheOldestRunningTaskAndItsKey) {
  AsyncWriter w(options(1));
  auto stuck = std::make_shared<Gate>();
  auto started = std::make_shared<Latch>(1);
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([=](TaskControl& control) {
                 control.setActivity("ns/tp0of1/00000000000000ab/L2");
                 started->countDown();
                 stuck->wait();
                 return Status::Ok();
               },
               {"write layer 2 of request q", 2, "q"})
                  .ok());
  ASSERT_TRUE(started->waitFor(testing::kLong));
  Status timed_out = w.waitAllDone(0ms);
  EXPECT_EQ(timed_out.code(), StatusCode::kTimeout);
  EXPECT_NE(timed_out.message().find("write layer 2 of request q"), std::string::npos) << timed_out.message();
  EXPECT_EQ(timed_out.key(), "ns/tp0of1/00000000000000ab/L2");
  EXPECT_EQ(w.state(), WriterState::kAccepting);  // the cycle stays open
  stuck->open();
  EXPECT_TRUE(w.waitAllDone(testing::kLong).ok());
}

TEST(WriterAbandon, ASecondWaiterIsRefusedAndTheFirstStillFinishesTheCycle) {
  WriterOptions o = options(1);
  auto finisher_runs = std::make_shared<std::atomic<int>>(0);
  o.cycle_finisher = [finisher_runs](const CycleReport&) -> ControlledTask {
    return [finisher_runs](TaskControl&) {
      ++*finisher_runs;
      return Status::Ok();
    };
  };
  AsyncWriter w(o);
  auto release = std::make_shared<Gate>();
  auto started = std::make_shared<Latch>(1);
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([=] {
                 started->countDown();
                 release->wait();
                 return Status::Ok();
               },
               {"t", 0})
                  .ok());
  ASSERT_TRUE(started->waitFor(testing::kLong));
  Status first;
  std::thread waiter([&] { first = w.waitAllDone(testing::kLong); });
  ASSERT_TRUE(eventually([&] { return w.state() == WriterState::kDraining; }));
  EXPECT_EQ(w.waitAllDone(testing::kLong).code(), StatusCode::kLifecycle);
  release->open();
  waiter.join();
  EXPECT_TRUE(first.ok()) << first.toString();
  EXPECT_EQ(finisher_runs->load(), 1);
}

TEST(WriterAbandon, AFailingFinisherFailsTheBarrierAndAnAbortedCycleRunsNone) {
  WriterOptions o = options(1);
  auto calls = std::make_shared<std::atomic<int>>(0);
  o.cycle_finisher = [calls](const CycleReport& outcome) -> ControlledTask {
    ++*calls;
    if (outcome.completed == 0) return nullptr;
    return [](TaskControl&) { return Status::IoError("commit put failed").withKey("ns/x/commit"); };
  };
  AsyncWriter w(o);
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"t", 0}).ok());
  CycleReport report;
  Status s = w.waitAllDone(testing::kLong, &report);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.key(), "ns/x/commit");
  EXPECT_EQ(report.failed, 1u);
  EXPECT_EQ(w.state(), WriterState::kIdle);

  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"t", 0}).ok());
  ASSERT_TRUE(w.abort().ok());
  EXPECT_EQ(calls->load(), 1);  // the aborted cycle never reached its finisher
}

TEST(WriterAbandon, CancelledAndFailedRequestsReachTheFinisher) {
  WriterOptions o = options(1);
  auto seen = std::make_shared<CycleReport>();
  o.cycle_finisher = [seen](const CycleReport& outcome) -> ControlledTask {
    *seen = outcome;
    return nullptr;
  };
  AsyncWriter w(o);
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([] { return Status::IoError("x"); }, {"t", 0, "bad"}).ok());
  ASSERT_TRUE(w.submit([] { return Status::IoError("y"); }, {"t", 0, ""}).ok());
  ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"t", 0, "good"}).ok());
  w.cancelRequest("dropped");
  (void)w.waitAllDone(testing::kLong);
  EXPECT_EQ(seen->failed_requests, (std::set<std::string>{"bad"}));
  EXPECT_TRUE(seen->empty_request_failed);
  EXPECT_EQ(seen->cancelled_requests, (std::set<std::string>{"dropped"}));
}

TEST(WriterAbandon, AWriterDestroyedByItsOwnTaskDoesNotWaitForItself) {
  auto writer = std::make_shared<AsyncWriter>(options(1));
  auto done = std::make_shared<Latch>(1);
  ASSERT_TRUE(writer->init().ok());
  std::weak_ptr<AsyncWriter> weak = writer;
  // The task holds the last reference, so the destructor runs on the writer's own worker thread.
  ASSERT_TRUE(writer->submit([holder = std::move(writer), done]() mutable {
                     holder.reset();
                     done->countDown();
                     return Status::Ok();
                   },
                   {"last reference", 0})
                  .ok());
  ASSERT_TRUE(done->waitFor(testing::kLong));
  EXPECT_TRUE(eventually([&] { return weak.expired(); }));
}

}  // namespace
}  // namespace kvdump

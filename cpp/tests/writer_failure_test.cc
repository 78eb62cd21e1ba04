// Failures are isolated, all counted, and the first one is reported with its label.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>

#include "kvdump/async_writer.h"
#include "test_support.h"

namespace kvdump {
namespace {

TEST(WriterFailure, ManyFailuresMixedWithSuccessesAreAllCounted) {
  AsyncWriter w({4, 64});
  ASSERT_TRUE(w.init().ok());
  std::atomic<int> ran{0};
  constexpr int kTasks = 200;
  for (int i = 0; i < kTasks; ++i) {
    ASSERT_TRUE(w.submit(
                     [&, i] {
                       ++ran;
                       if (i % 7 == 3) return Status::StoreFull("full").withKey("k" + std::to_string(i));
                       return Status::Ok();
                     },
                     {"layer " + std::to_string(i), i, "req-" + std::to_string(i % 3)})
                    .ok());
  }
  CycleReport report;
  Status s = w.waitAllDone(std::nullopt, &report);
  EXPECT_EQ(ran.load(), kTasks);  // a failure did not stop the others
  int expected_failures = 0;
  for (int i = 0; i < kTasks; ++i) expected_failures += (i % 7 == 3);
  EXPECT_EQ(report.failed, static_cast<uint64_t>(expected_failures));
  EXPECT_EQ(report.completed, static_cast<uint64_t>(kTasks - expected_failures));
  EXPECT_EQ(s.code(), StatusCode::kStoreFull);
  ASSERT_TRUE(report.first_failure.has_value());
  // Which failing task is "first" depends on scheduling; it must be one of the failing ones.
  const auto& f = *report.first_failure;
  EXPECT_EQ(f.label.layer % 7, 3);
  EXPECT_EQ(f.status.key(), "k" + std::to_string(f.label.layer));
  EXPECT_EQ(f.label.request, "req-" + std::to_string(f.label.layer % 3));
  EXPECT_EQ(w.state(), WriterState::kIdle);
}

TEST(WriterFailure, ThrownExceptionsAreRecordedNotEscaped) {
  AsyncWriter w({2, 8});
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([]() -> Status { throw std::runtime_error("boom"); }, {"thrower", 5}).ok());
  ASSERT_TRUE(w.submit([]() -> Status { throw 17; }, {"int thrower", 6}).ok());
  CycleReport report;
  Status s = w.waitAllDone(std::nullopt, &report);
  EXPECT_EQ(s.code(), StatusCode::kTaskFailed);
  EXPECT_EQ(report.failed, 2u);
  ASSERT_TRUE(report.first_failure);
  EXPECT_NE(report.first_failure->status.message().find("threw"), std::string::npos);
}

TEST(WriterFailure, NextCycleStartsClean) {
  AsyncWriter w({2, 8});
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([] { return Status::IoError("disk"); }, {"bad"}).ok());
  EXPECT_EQ(w.waitAllDone().code(), StatusCode::kIoError);
  ASSERT_TRUE(w.init().ok());
  ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"good"}).ok());
  CycleReport report;
  EXPECT_TRUE(w.waitAllDone(std::nullopt, &report).ok());
  EXPECT_EQ(report.failed, 0u);
  EXPECT_FALSE(report.first_failure.has_value());
  EXPECT_EQ(w.stats().failed, 1u);  // cumulative counter keeps history
}

TEST(WriterFailure, FirstFailureIsTheEarliestRecorded) {
  // With one thread tasks run in submission order, so "first" is well defined here.
  AsyncWriter w({1, 8});
  ASSERT_TRUE(w.init().ok());
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(w.submit([i] { return i >= 2 ? Status::IoError("e" + std::to_string(i)) : Status::Ok(); },
                         {"t" + std::to_string(i), i})
                    .ok());
  }
  CycleReport report;
  Status s = w.waitAllDone(std::nullopt, &report);
  EXPECT_EQ(s.message(), "e2");
  EXPECT_EQ(report.first_failure->label.layer, 2);
  EXPECT_EQ(report.failed, 4u);
}


TEST(WriterFailure, AFullQueueFailsItsTaskRequestWhenTheCycleSaysSo) {
  WriterOptions options{1, 1};
  options.submit_timeout = std::chrono::milliseconds(10);
  AsyncWriter w(options);
  ASSERT_TRUE(w.init(CycleOptions{true}).ok());
  testing::Gate gate;
  testing::Latch started(1);
  std::atomic<int> ran{0};
  ASSERT_TRUE(w.submit([&] { started.countDown(); gate.wait(); return Status::Ok(); }, {"", 0, "r0"}).ok());
  ASSERT_TRUE(started.waitFor(std::chrono::seconds(30)));
  ASSERT_TRUE(w.submit([&] { ++ran; return Status::Ok(); }, {"", 1, "r1"}).ok());  // fills the queue
  // The only worker is held: these never find room. Each is recorded, not raised or queued.
  EXPECT_TRUE(w.submit([&] { ++ran; return Status::Ok(); }, {"", 2, "a"}).ok());
  EXPECT_TRUE(w.submit([&] { ++ran; return Status::Ok(); }, {"", 3, "b"}).ok());
  gate.open();
  CycleReport report;
  Status s = w.waitAllDone(std::nullopt, &report);
  EXPECT_EQ(s.code(), StatusCode::kTimeout) << s.toString();
  EXPECT_NE(s.message().find("queue full"), std::string::npos) << s.message();
  EXPECT_EQ(ran.load(), 1);
  EXPECT_EQ(report.submitted, 4u);
  EXPECT_EQ(report.completed, 2u);
  EXPECT_EQ(report.failed, 2u);
  EXPECT_EQ(report.failed_requests, (std::set<std::string>{"a", "b"}));
  ASSERT_TRUE(report.first_failure);
  EXPECT_EQ(report.first_failure->label.layer, 2);
  EXPECT_EQ(w.stats().rejected, 0u);

  // The option is the cycle's: the next one, opened without it, returns TIMEOUT to the submitter.
  ASSERT_TRUE(w.init().ok());
  testing::Gate second;
  testing::Latch started_again(1);
  ASSERT_TRUE(w.submit([&] { started_again.countDown(); second.wait(); return Status::Ok(); }, {"", 0, "r"}).ok());
  ASSERT_TRUE(started_again.waitFor(std::chrono::seconds(30)));
  ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"", 1, "r"}).ok());
  EXPECT_EQ(w.submit([] { return Status::Ok(); }, {"", 2, "r"}).code(), StatusCode::kTimeout);
  second.open();
  EXPECT_TRUE(w.waitAllDone().ok());
}

}  // namespace

}  // namespace kvdump

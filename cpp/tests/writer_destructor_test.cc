// Destroying a writer with work pending cancels the queue, waits for running tasks and says so.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <optional>
#include <thread>

#include "kvdump/async_writer.h"
#include "test_support.h"

namespace kvdump {
namespace {

using namespace std::chrono_literals;
using testing::Gate;
using testing::Latch;

TEST(WriterDestructor, CancelsQueuedWaitsRunningAndReports) {
  Gate gate;
  Latch started(1);
  auto captured = std::make_shared<int>(0);
  std::atomic<int> ran{0};
  std::optional<AbortReport> reported;
  {
    WriterOptions options{1, 16};
    options.on_destroy_report = [&](const AbortReport& r) { reported = r; };
    AsyncWriter w(options);
    ASSERT_TRUE(w.init().ok());
    for (int i = 0; i < 4; ++i) {
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
    std::thread([&] {
      std::this_thread::sleep_for(20ms);
      gate.open();
    }).detach();
  }  // destructor runs here
  ASSERT_TRUE(reported.has_value());
  EXPECT_EQ(reported->cancelled, 3u);
  EXPECT_EQ(reported->finished_running, 1u);
  EXPECT_EQ(ran.load(), 1);
  EXPECT_EQ(captured.use_count(), 1);
}

TEST(WriterDestructor, IdleWriterReportsNothing) {
  bool called = false;
  {
    WriterOptions options{2, 8};
    options.on_destroy_report = [&](const AbortReport&) { called = true; };
    AsyncWriter w(options);
    ASSERT_TRUE(w.init().ok());
    ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"t"}).ok());
    ASSERT_TRUE(w.waitAllDone().ok());
  }
  EXPECT_FALSE(called);
}

TEST(WriterDestructor, OpenCycleWithNoTasksIsStillReported) {
  std::optional<AbortReport> reported;
  {
    WriterOptions options{2, 8};
    options.on_destroy_report = [&](const AbortReport& r) { reported = r; };
    AsyncWriter w(options);
    ASSERT_TRUE(w.init().ok());
  }
  ASSERT_TRUE(reported.has_value());
  EXPECT_EQ(reported->cancelled, 0u);
}

TEST(WriterDestructor, DefaultReportGoesToStderr) {
  Gate gate;
  ::testing::internal::CaptureStderr();
  {
    AsyncWriter w({1, 8});
    ASSERT_TRUE(w.init().ok());
    ASSERT_TRUE(w.submit([&] { gate.wait(); return Status::Ok(); }, {"blocker"}).ok());
    ASSERT_TRUE(w.submit([] { return Status::Ok(); }, {"queued"}).ok());
    while (w.stats().running == 0) std::this_thread::sleep_for(1ms);
    gate.open();
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("cancelled"), std::string::npos) << err;
}

}  // namespace
}  // namespace kvdump

#include "kvdump/completion_board.h"

#include <gtest/gtest.h>

#include <memory>
#include <thread>
#include <vector>

namespace kvdump {
namespace {

using namespace std::chrono_literals;

TEST(CompletionBoard, WaitReturnsTheRecordedOutcome) {
  CompletionBoard board;
  board.expect(3);
  std::thread t([&] {
    std::this_thread::sleep_for(10ms);
    board.complete(3, Status::NotFound("gone").withKey("k"));
  });
  Status s = board.wait(3, 10s);
  t.join();
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.key(), "k");
}

TEST(CompletionBoard, UnknownIdIsNotFoundAndPendingTimesOut) {
  CompletionBoard board;
  EXPECT_EQ(board.wait(1, 10ms).code(), StatusCode::kNotFound);
  board.expect(1);
  EXPECT_EQ(board.wait(1, 10ms).code(), StatusCode::kTimeout);
}

TEST(CompletionBoard, CancelPendingWakesWaiters) {
  CompletionBoard board;
  board.expect(5);
  board.expect(6);
  board.complete(6, Status::Ok());
  std::thread t([&] {
    std::this_thread::sleep_for(10ms);
    board.cancelPending("aborted");
  });
  EXPECT_EQ(board.wait(5, 10s).code(), StatusCode::kCancelled);
  t.join();
  EXPECT_TRUE(board.wait(6, 10ms).ok());  // finished work keeps its outcome
}

TEST(CompletionBoard, ClosingWakesEveryWaiterWithLifecycleAndOutlivesNoOne) {
  auto board = std::make_shared<CompletionBoard>();
  board->expect(1);
  std::vector<std::thread> waiters;
  std::vector<Status> seen(4);
  for (int i = 0; i < 4; ++i) {
    waiters.emplace_back([board, &seen, i] {
      // Half wait without a deadline: closing must wake them too.
      seen[i] = board->wait(1, i % 2 ? std::optional<std::chrono::nanoseconds>() : std::optional(std::chrono::nanoseconds(10s)));
    });
  }
  std::weak_ptr<CompletionBoard> weak = board;
  board->close("the loader was closed");
  board.reset();  // the waiters' own references keep it alive until they return
  for (auto& t : waiters) t.join();
  for (const Status& s : seen) EXPECT_EQ(s.code(), StatusCode::kLifecycle) << s.toString();
  EXPECT_TRUE(weak.expired());
}

TEST(CompletionBoard, AfterCloseWaitsFailAtOnceAndCompletionsAreIgnored) {
  CompletionBoard board;
  board.expect(2);
  board.close("closed");
  board.complete(2, Status::Ok());
  EXPECT_EQ(board.wait(2, std::nullopt).code(), StatusCode::kLifecycle);
}

}  // namespace
}  // namespace kvdump

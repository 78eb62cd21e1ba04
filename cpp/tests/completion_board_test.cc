#include "kvdump/completion_board.h"

#include <gtest/gtest.h>

#include <thread>

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

}  // namespace
}  // namespace kvdump

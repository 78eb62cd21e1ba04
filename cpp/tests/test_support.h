// Small synchronisation helpers shared by the writer tests.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <future>

namespace kvdump::testing {

/// A one-shot gate: tasks block in wait() until open() is called; copyable, thread-safe.
class Gate {
 public:
  Gate() : future_(promise_.get_future().share()) {}
  void open() { promise_.set_value(); }
  void wait() const { future_.wait(); }

 private:
  std::promise<void> promise_;
  std::shared_future<void> future_;
};

/// Counts down to zero; wait() returns once count() reached zero or the deadline passed.
class Latch {
 public:
  explicit Latch(int count) : remaining_(count) {}
  void countDown() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--remaining_ <= 0) cv_.notify_all();
  }
  bool waitFor(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return remaining_ <= 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int remaining_;
};

inline constexpr std::chrono::milliseconds kLong{10000};

}  // namespace kvdump::testing

#include "kvdump/task_control.h"

#include <utility>

namespace kvdump {

bool TaskControl::enterCallerMemory() {
  std::lock_guard<std::mutex> lock(mu_);
  if (abandoned_.load(std::memory_order_relaxed)) return false;
  in_caller_memory_ = true;
  return true;
}

void TaskControl::leaveCallerMemory() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_caller_memory_ = false;
  }
  left_cv_.notify_all();
}

bool TaskControl::runIfLive(const std::function<void()>& fn) {
  std::lock_guard<std::mutex> lock(mu_);
  if (abandoned_.load(std::memory_order_relaxed)) return false;
  fn();
  return true;
}

void TaskControl::setWake(std::function<void()> wake) {
  std::unique_lock<std::mutex> lock(mu_);
  if (wake && abandoned_.load(std::memory_order_relaxed)) {
    lock.unlock();
    wake();
    return;
  }
  wake_ = std::move(wake);
}

void TaskControl::setActivity(std::string activity) {
  std::lock_guard<std::mutex> lock(mu_);
  activity_ = std::move(activity);
}

std::string TaskControl::activity() const {
  std::lock_guard<std::mutex> lock(mu_);
  return activity_;
}

bool TaskControl::abandon() {
  std::function<void()> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || abandoned_.load(std::memory_order_relaxed)) return false;
    abandoned_.store(true, std::memory_order_release);
    wake = wake_;
  }
  // Outside the lock: the wake-up takes the lock of whatever the task waits on.
  if (wake) wake();
  return true;
}

void TaskControl::awaitCallerMemoryReleased() {
  std::unique_lock<std::mutex> lock(mu_);
  left_cv_.wait(lock, [&] { return !in_caller_memory_; });
}

void TaskControl::markCycleAborted() {
  std::lock_guard<std::mutex> lock(mu_);
  cycle_aborted_ = true;
}

bool TaskControl::seal() {
  std::lock_guard<std::mutex> lock(mu_);
  if (abandoned_.load(std::memory_order_relaxed) || cycle_aborted_) return false;
  finished_ = true;
  return true;
}

bool TaskControl::finish() {
  std::lock_guard<std::mutex> lock(mu_);
  finished_ = true;
  wake_ = nullptr;
  return abandoned_.load(std::memory_order_relaxed);
}

}  // namespace kvdump

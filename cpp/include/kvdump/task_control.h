// TaskControl: how a running task and the writer agree on abandonment, so that a task given up by a
// deadline never touches the caller's memory again.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

namespace kvdump {

/// Shared by one running task and its writer. A task brackets every access to memory the caller
/// owns (a gather from the KV cache, a scatter into it) with enterCallerMemory/leaveCallerMemory;
/// abandon() waits for such a section to end and refuses later ones, so after abandon() returns the
/// task never reads or writes the caller's memory again. All methods are thread-safe.
class TaskControl {
 public:
  /// False once abandoned: the task must then leave the caller's memory alone and return.
  bool enterCallerMemory();
  /// Ends the section begun by a successful enterCallerMemory().
  void leaveCallerMemory();
  /// True once abandon() has run; a cheap read for loops and waits.
  bool abandoned() const { return abandoned_.load(std::memory_order_acquire); }

  /// Runs `fn` only if the task is not abandoned, atomically with respect to abandon(): what `fn`
  /// records (e.g. which blocks stored) is never recorded by an abandoned task. Returns whether it ran.
  bool runIfLive(const std::function<void()>& fn);

  /// `wake` runs (on the abandoning thread) when the task is abandoned, to cut short a wait the task
  /// is in; set it before waiting and clear it (nullptr) after. Runs at once if already abandoned.
  void setWake(std::function<void()> wake);

  /// Called by the task as its last act: false if it was abandoned or its cycle is being aborted
  /// (what it did must then be undone or ignored); true otherwise, after which abandon() no longer
  /// applies and the writer counts the task as finished.
  bool seal();
  /// Marks the task's cycle as being aborted: a later seal() returns false.
  void markCycleAborted();

  /// Notes what the task is doing now (e.g. the store key of its put), named when it overruns a deadline.
  void setActivity(std::string activity);
  std::string activity() const;

  /// Marks the task abandoned unless it already finished; returns whether it was still running.
  /// Does not wait: call awaitCallerMemoryReleased() afterwards, without holding other locks.
  bool abandon();
  /// Waits until the task is outside any caller-memory section (immediately if it is).
  void awaitCallerMemoryReleased();
  /// Called by the worker when the task returned; returns whether it had been abandoned.
  bool finish();

  /// The cycle the task runs in (see CycleReport::cycle); set by the writer before the task starts.
  uint64_t cycle() const { return cycle_; }
  void setCycle(uint64_t cycle) { cycle_ = cycle; }

  /// The request the task was queued for (its label's; empty for none), so that a task need not
  /// carry a copy of its own. The writer points it at the running task's label before the task
  /// starts; the label outlives the run.
  const std::string& request() const {
    static const std::string none;
    return request_ != nullptr ? *request_ : none;
  }
  void setRequest(const std::string* request) { request_ = request; }

 private:
  mutable std::mutex mu_;
  std::condition_variable left_cv_;
  std::atomic<bool> abandoned_{false};
  bool finished_ = false;
  bool cycle_aborted_ = false;
  bool in_caller_memory_ = false;
  std::function<void()> wake_;
  std::string activity_;
  uint64_t cycle_ = 0;
  const std::string* request_ = nullptr;
};

/// Brackets a caller-memory section; `entered()` is false when the task was abandoned. Not copyable.
class CallerMemoryScope {
 public:
  explicit CallerMemoryScope(TaskControl& control) : control_(control), entered_(control.enterCallerMemory()) {}
  ~CallerMemoryScope() {
    if (entered_) control_.leaveCallerMemory();
  }
  CallerMemoryScope(const CallerMemoryScope&) = delete;
  CallerMemoryScope& operator=(const CallerMemoryScope&) = delete;
  bool entered() const { return entered_; }

 private:
  TaskControl& control_;
  const bool entered_;
};

}  // namespace kvdump

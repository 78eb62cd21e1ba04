// AsyncWriter: a fixed thread pool with an explicit per-forward lifecycle (init, submit, waitAllDone).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kvdump/latency_histogram.h"
#include "kvdump/status.h"
#include "kvdump/task.h"

namespace kvdump {

/// Lifecycle states. IDLE -> ACCEPTING (init) -> DRAINING (inside waitAllDone) -> IDLE.
enum class WriterState { kIdle, kAccepting, kDraining, kAborting };

/// Lower-case name of a state ("idle"); static storage, thread-safe.
const char* writerStateName(WriterState state);

/// What an abort (or the destructor) cancelled and observed; a plain value.
struct AbortReport {
  uint64_t cancelled = 0;         // queued tasks dropped without running
  uint64_t finished_running = 0;  // tasks that were running and were waited for
  uint64_t failed = 0;            // tasks of the aborted cycle that had failed
  std::optional<TaskFailure> first_failure;
};

/// Outcome of one barrier; a plain value filled by waitAllDone.
struct CycleReport {
  uint64_t submitted = 0;
  uint64_t completed = 0;  // ran and returned OK
  uint64_t failed = 0;     // ran and returned an error or threw
  uint64_t cancelled = 0;  // cancelled per request during the cycle
  std::optional<TaskFailure> first_failure;
};

/// Cumulative counters since construction; a plain value snapshot.
struct WriterStats {
  uint64_t submitted = 0;
  uint64_t completed = 0;
  uint64_t failed = 0;
  uint64_t cancelled = 0;
  uint64_t rejected = 0;  // submits refused (lifecycle misuse or queue deadline)
  uint64_t cycles = 0;
  uint64_t aborts = 0;
  uint64_t queue_high_water = 0;
  uint64_t queue_depth = 0;
  uint64_t running = 0;
  size_t num_threads = 0;
  size_t queue_capacity = 0;
  LatencySummary submit_latency;   // calling-thread cost of submit()
  LatencySummary queue_wait;       // enqueue to start of run
  LatencySummary task_latency;     // run time of a task on its worker
  LatencySummary barrier_wait;     // time the caller spent blocked in waitAllDone
};

/// Construction options; a plain value.
struct WriterOptions {
  size_t num_threads = 0;  // 0 picks defaultNumThreads()
  size_t queue_capacity = 1024;
  std::chrono::milliseconds submit_timeout{30000};  // how long submit may block on a full queue
  /// Called by the destructor when it had to cancel or wait for work; default logs to stderr.
  std::function<void(const AbortReport&)> on_destroy_report;
};

/// INVALID_ARGUMENT when options cannot work (e.g. a zero queue capacity); pure function.
Status validateWriterOptions(const WriterOptions& options);

/// Threads to use when the caller does not say: the hardware concurrency capped at 8, at least 1.
size_t defaultNumThreads();

/// A lifecycle thread pool. All methods are thread-safe; waitAllDone and abort must not be called
/// from one of this writer's own tasks (they return LIFECYCLE instead of deadlocking). The writer
/// owns queued tasks until they run or are cancelled; the destructor cancels queued work, waits for
/// running work, reports what it did through WriterOptions::on_destroy_report, and joins.
class AsyncWriter {
 public:
  /// Options must pass validateWriterOptions; a zero capacity is raised to 1 rather than deadlock.
  explicit AsyncWriter(WriterOptions options = {});
  ~AsyncWriter();
  AsyncWriter(const AsyncWriter&) = delete;
  AsyncWriter& operator=(const AsyncWriter&) = delete;

  /// Opens a cycle: IDLE -> ACCEPTING. LIFECYCLE if a cycle is already open.
  Status init();

  /// Queues a task. Blocks while the queue is full, up to `timeout` (default: options'
  /// submit_timeout), then returns TIMEOUT. LIFECYCLE unless ACCEPTING. Never drops silently: a
  /// task is either queued (and later run or reported cancelled) or the call returns an error.
  Status submit(Task task, TaskLabel label,
                std::optional<std::chrono::nanoseconds> timeout = std::nullopt);

  /// Closes the cycle and waits for every queued and running task. On success the writer is IDLE and
  /// the result is OK or the first failure (with `report` naming its task and the failure count).
  /// With a deadline that passes, returns TIMEOUT and the cycle stays open (ACCEPTING): wait again
  /// or abort. CANCELLED if another thread aborted the cycle meanwhile.
  Status waitAllDone(std::optional<std::chrono::nanoseconds> timeout = std::nullopt,
                     CycleReport* report = nullptr);

  /// Cancels queued tasks, waits for running ones, releases all captured state, returns to IDLE.
  /// A no-op (empty report) when IDLE with nothing pending.
  Status abort(AbortReport* report = nullptr);

  /// Cancels queued tasks whose label.request equals `request`; returns how many were cancelled.
  uint64_t cancelRequest(const std::string& request);

  WriterState state() const;
  WriterStats stats() const;
  size_t numThreads() const { return threads_.size(); }

 private:
  struct QueuedTask {
    Task fn;
    TaskLabel label;
    std::chrono::steady_clock::time_point enqueued;
  };

  void workerLoop();
  void recordOutcomeLocked(const TaskLabel& label, Status status);
  void resetCycleLocked();
  bool onWorkerThread() const;

  const WriterOptions options_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // workers: queue non-empty or shutdown
  std::condition_variable space_cv_;  // submitters: queue has room or state changed
  std::condition_variable idle_cv_;   // barrier/abort: queue empty and nothing running
  std::deque<QueuedTask> queue_;
  size_t running_ = 0;
  WriterState state_ = WriterState::kIdle;
  bool last_cycle_aborted_ = false;
  bool shutting_down_ = false;
  uint64_t generation_ = 0;  // bumps whenever a cycle ends, so a waiter can tell it was aborted

  CycleReport cycle_;

  uint64_t total_submitted_ = 0;
  uint64_t total_completed_ = 0;
  uint64_t total_failed_ = 0;
  uint64_t total_cancelled_ = 0;
  uint64_t total_rejected_ = 0;
  uint64_t total_cycles_ = 0;
  uint64_t total_aborts_ = 0;
  uint64_t queue_high_water_ = 0;

  LatencyHistogram submit_latency_;
  LatencyHistogram queue_wait_;
  LatencyHistogram task_latency_;
  LatencyHistogram barrier_wait_;

  std::vector<std::thread> threads_;
};

}  // namespace kvdump

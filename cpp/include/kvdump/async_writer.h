// AsyncWriter: a fixed thread pool with an explicit per-forward lifecycle (init, submit, waitAllDone).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <functional>
#include <optional>
#include <string>
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
  uint64_t cycle = 0;             // the cycle aborted (CycleReport::cycle); its later ones are untouched
  uint64_t cancelled = 0;         // queued tasks dropped without running
  uint64_t finished_running = 0;  // tasks that were running and finished within the abort's deadline
  uint64_t abandoned = 0;         // running tasks given up at the deadline (they never touch caller memory again)
  uint64_t failed = 0;            // tasks of the aborted cycle that had failed
  std::optional<TaskFailure> first_failure;
  std::optional<TaskFailure> first_abandoned;  // TIMEOUT naming the task and what it was doing
};

/// Outcome of one barrier; a plain value filled by waitAllDone.
struct CycleReport {
  uint64_t cycle = 0;      // identifies the cycle; TaskControl::cycle() of its tasks
  uint64_t submitted = 0;
  uint64_t completed = 0;  // ran and returned OK
  uint64_t failed = 0;     // ran and returned an error or threw
  uint64_t cancelled = 0;  // cancelled per request during the cycle
  std::optional<TaskFailure> first_failure;
  std::set<std::string> failed_requests;     // label.request of every failed task (non-empty ids only)
  std::set<std::string> cancelled_requests;  // requests named to cancelRequest() during the cycle
  bool empty_request_failed = false;         // a task labelled with no request failed
};

/// How one cycle treats what its submitters cannot control; a plain value.
struct CycleOptions {
  /// A submit whose queue stays full for its whole deadline records its task as failed (naming its
  /// layer and request, reported by the barrier, the request withheld from commit) and returns OK
  /// instead of TIMEOUT; once that happened, later full-queue submits of the cycle record at once.
  /// For callers that must not lose their own work to a stalled store (a forward whose output is
  /// returned whatever its save did).
  bool full_queue_fails_request = false;
};

/// Cumulative counters since construction; a plain value snapshot.
struct WriterStats {
  uint64_t submitted = 0;
  uint64_t completed = 0;
  uint64_t failed = 0;
  uint64_t cancelled = 0;
  uint64_t rejected = 0;  // submits refused (lifecycle misuse or queue deadline)
  uint64_t abandoned = 0;  // running tasks given up by abort() at its deadline
  uint64_t cycles = 0;
  uint64_t aborts = 0;
  uint64_t queue_high_water = 0;
  uint64_t queue_depth = 0;
  uint64_t running = 0;
  uint64_t threads_in_abandoned_calls = 0;  // threads still inside a call whose task was abandoned
  uint64_t threads_started = 0;             // including replacements of threads left in abandoned calls
  size_t num_threads = 0;
  size_t queue_capacity = 0;
  std::chrono::microseconds idle_poll{0};  // how often an idle worker polls (0: submit wakes one)
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
  /// How long abort() without an explicit deadline (and the destructor) lets running tasks finish
  /// before abandoning them.
  std::chrono::milliseconds abort_timeout{5000};
  /// Threads that may be left inside abandoned calls while the pool still starts replacements;
  /// 0 means num_threads. Past the bound the pool runs with fewer threads until calls return.
  size_t max_abandoned_threads = 0;
  /// Each worker lowers its own scheduling priority by this much when it starts (Linux: the batch
  /// class and this nice increment, 1..19), so it runs on cores the forward leaves idle; 0 leaves
  /// the workers at the caller's priority.
  int worker_nice = 10;
  /// 0: submit() wakes a worker whenever none is running or a task already waits. Unset (the
  /// default): the same as 0 here; kvdump's engines pick for the machine (defaultEngineIdlePoll).
  /// Otherwise, while a cycle is open, one idle worker looks at the queue this often instead, so the
  /// forward's thread makes no wake-up call per task (on a VM, a cross-CPU wake-up costs it several
  /// microseconds); a task then starts within this interval, or at the barrier, which wakes every
  /// idle worker. Polling pays off only where the CPUs are mostly idle (a GPU server): on cores the
  /// forward keeps busy, each poll preempts a forward thread, which costs more than the wake-ups.
  std::optional<std::chrono::microseconds> idle_poll;
  /// Called by the destructor when it had to cancel or wait for work; default logs to stderr.
  std::function<void(const AbortReport&)> on_destroy_report;
  /// Called by waitAllDone once every task of the cycle has finished, without the writer's lock
  /// held; a non-empty result runs last in the cycle, under the barrier's deadline, and its failure
  /// is the cycle's (used to publish commit records).
  std::function<ControlledTask(const CycleReport&)> cycle_finisher;
};

/// INVALID_ARGUMENT when options cannot work (e.g. a zero queue capacity); pure function.
Status validateWriterOptions(const WriterOptions& options);

/// Threads to use when the caller does not say: the hardware concurrency capped at 8, at least 1.
size_t defaultNumThreads();

/// A lifecycle thread pool; its threads start with the first init(). All methods are thread-safe; waitAllDone and abort must not be called
/// from one of this writer's own tasks (they return LIFECYCLE instead of deadlocking). The writer
/// owns queued tasks until they run or are cancelled. No method blocks past its deadline whatever a
/// task does: abort() abandons tasks still running at its deadline (waiting only for a
/// caller-memory section in progress, see TaskControl) and starts replacement threads, up to
/// max_abandoned_threads; a thread left in an abandoned call exits or rejoins when the call returns.
/// The destructor aborts with abort_timeout and reports through WriterOptions::on_destroy_report.
class AsyncWriter {
 public:
  /// Options must pass validateWriterOptions; a zero capacity is raised to 1 rather than deadlock.
  explicit AsyncWriter(WriterOptions options = {});
  ~AsyncWriter();
  AsyncWriter(const AsyncWriter&) = delete;
  AsyncWriter& operator=(const AsyncWriter&) = delete;

  /// Opens a cycle: IDLE -> ACCEPTING. LIFECYCLE if a cycle is already open.
  Status init(CycleOptions options = {});

  /// Queues a task. Blocks while the queue is full, up to `timeout` (default: options'
  /// submit_timeout), then returns TIMEOUT (or records the task as failed, see CycleOptions).
  /// LIFECYCLE unless ACCEPTING. Never drops silently: a task is either queued (and later run or
  /// reported cancelled), recorded as failed, or the call returns an error. With `interrupted`, a
  /// wait for queue space calls it (without the writer's lock) about every 100 ms, and ends with
  /// CANCELLED, the task not queued, once it returns true.
  Status submit(ControlledTask task, TaskLabel label, std::optional<std::chrono::nanoseconds> timeout = std::nullopt,
                const std::function<bool()>& interrupted = {});
  /// As above, for a task that touches no caller memory (it may still be abandoned while it runs).
  Status submit(Task task, TaskLabel label, std::optional<std::chrono::nanoseconds> timeout = std::nullopt,
                const std::function<bool()>& interrupted = {});

  /// Closes the cycle and waits for every queued and running task, then for the cycle finisher. On
  /// success the writer is IDLE and the result is OK or the first failure (with `report` naming its
  /// task, the failure count and the failed requests). With a deadline that passes, returns TIMEOUT
  /// naming the oldest running task and what it is doing; the cycle stays open (wait again or
  /// abort), and accepts tasks again unless the finisher already started. CANCELLED if another
  /// thread aborted the cycle meanwhile; LIFECYCLE if another thread is already waiting. With
  /// `interrupted`, calls it (without the writer's lock) about every 100 ms of waiting; once it
  /// returns true the wait ends as a timeout would, but with CANCELLED saying it was interrupted.
  Status waitAllDone(std::optional<std::chrono::nanoseconds> timeout = std::nullopt,
                     CycleReport* report = nullptr, const std::function<bool()>& interrupted = {});

  /// Cancels queued tasks, lets running ones finish until `timeout` (default: abort_timeout), then
  /// abandons the rest; returns to IDLE. A no-op (empty report) when IDLE with nothing pending.
  Status abort(AbortReport* report = nullptr, std::optional<std::chrono::nanoseconds> timeout = std::nullopt);

  /// Ends the writer: aborts an open cycle within `timeout` (default: abort_timeout), reports what
  /// it cancelled or abandoned through on_destroy_report, and stops the idle threads. Later calls
  /// of init() return LIFECYCLE. Idempotent; the destructor calls it.
  void close(std::optional<std::chrono::nanoseconds> timeout = std::nullopt);

  /// True in a process forked from the one that made this writer. Its threads do not exist there,
  /// and its locks may have been copied held: init, submit, waitAllDone and abort return LIFECYCLE,
  /// close does nothing, and the destructor leaves the pool's state alone.
  bool forkedAway() const;

  /// True on one of this writer's threads while it runs a task (and any store call it makes).
  bool calledFromOwnTask() const;

  /// Cancels queued tasks whose label.request equals `request` and marks the request cancelled for
  /// the open cycle (a running task of it finishes, but its request is reported cancelled); returns
  /// how many queued tasks were cancelled.
  uint64_t cancelRequest(const std::string& request);

  WriterState state() const;
  WriterStats stats() const;
  size_t numThreads() const;

  struct Core;  // shared with the worker threads, so a thread left in an abandoned call outlives the writer safely

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace kvdump

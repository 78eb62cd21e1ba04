#include "kvdump/async_writer.h"

#include <cxxabi.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <iostream>
#include <mutex>
#include <thread>
#include <utility>

#include "kvdump/thread_priority.h"

namespace kvdump {

using Clock = std::chrono::steady_clock;

namespace {

uint64_t nanosSince(Clock::time_point start) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
}

std::string secondsText(Clock::duration d) {
  const double s = std::chrono::duration<double>(d).count();
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f s", s);
  return buf;
}

void logDestroyReport(const AbortReport& r) {
  std::cerr << "kvdump: AsyncWriter destroyed with an open cycle: cancelled " << r.cancelled
            << " queued task(s), waited for " << r.finished_running << " running task(s), abandoned "
            << r.abandoned << ", " << r.failed << " failed";
  if (r.first_failure) {
    std::cerr << " (first: " << r.first_failure->label.text() << ": " << r.first_failure->status.toString() << ")";
  }
  if (r.first_abandoned) std::cerr << " (abandoned: " << r.first_abandoned->status.toString() << ")";
  std::cerr << std::endl;
}

// A deadline `timeout` from now; time_point::max() when it is too far to represent.
Clock::time_point deadlineAfter(std::chrono::nanoseconds timeout) {
  const auto now = Clock::now();
  if (timeout >= std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::time_point::max() - now)) {
    return Clock::time_point::max();
  }
  return now + std::chrono::duration_cast<Clock::duration>(timeout);
}

// Waits on `cv` until `ready` holds (true) or `deadline` passes (false). With `interrupted`, calls it
// about every 100 ms of waiting, without the lock (it may take the GIL, which a thread waiting for
// this lock may hold); once it returns true, or throws, the wait ends unready with `*stopped` set.
template <typename Ready>
bool waitReady(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, Clock::time_point deadline,
               Ready ready, const std::function<bool()>& interrupted, bool* stopped) {
  *stopped = false;
  if (!interrupted) {
    if (deadline != Clock::time_point::max()) return cv.wait_until(lock, deadline, ready);
    cv.wait(lock, ready);
    return true;
  }
  for (;;) {
    const auto slice_end = std::min(deadline, Clock::now() + std::chrono::milliseconds(100));
    if (cv.wait_until(lock, slice_end, ready)) return true;
    if (slice_end >= deadline) return false;
    lock.unlock();
    try {
      *stopped = interrupted();
    } catch (...) {
      *stopped = true;  // a check that cannot run ends the wait rather than wedging it
    }
    lock.lock();
    if (*stopped) return false;
  }
}

ControlledTask controlled(Task task) {
  if (!task) return nullptr;
  return [task = std::move(task)](TaskControl&) { return task(); };
}

}  // namespace

/// One task on its worker: the control it shares with the writer, and what names it.
struct TaskRun {
  TaskControl control;
  TaskLabel label;
  Clock::time_point started;
  bool finisher = false;  // the cycle's last task: its failure counts, its success is not a user task's
};

namespace {
// Counts the forks of this process as seen in the child: a pool made before a fork reads a larger
// count in the child. One atomic load, so the calling thread's submit can afford it.
std::atomic<uint64_t> g_forks{0};

uint64_t forksSoFar() {
  static const bool registered = [] {
    pthread_atfork(nullptr, nullptr, [] { g_forks.fetch_add(1, std::memory_order_relaxed); });
    return true;
  }();
  (void)registered;
  return g_forks.load(std::memory_order_relaxed);
}
}  // namespace

struct AsyncWriter::Core : std::enable_shared_from_this<AsyncWriter::Core> {
  struct QueuedTask {
    ControlledTask fn;
    TaskLabel label;
    Clock::time_point enqueued;
    bool finisher = false;
  };

  explicit Core(WriterOptions o) : options(std::move(o)) {}

  const WriterOptions options;
  const uint64_t forks_at_creation = forksSoFar();  // a child's count differs: the pool is its parent's
  size_t target_threads = 0;
  size_t max_abandoned_threads = 0;

  mutable std::mutex mu;
  std::condition_variable work_cv;   // workers: queue non-empty or shutdown
  std::condition_variable space_cv;  // submitters: queue has room or state changed
  std::condition_variable idle_cv;   // barrier/abort/destructor: tasks finished, threads exited
  std::deque<QueuedTask> queue;
  std::vector<std::shared_ptr<TaskRun>> running;  // tasks running and not abandoned
  WriterState state = WriterState::kIdle;
  bool last_cycle_aborted = false;
  bool shutting_down = false;
  bool closing = false;            // close() began: waiters it ends learn the writer was closed
  bool barrier_waiting = false;    // a thread is inside waitAllDone
  bool finisher_started = false;   // the cycle's last task was queued; the cycle takes no more tasks
  uint64_t generation = 0;         // bumps whenever a cycle ends, so a waiter can tell it was aborted
  size_t live_threads = 0;         // threads serving the queue (idle or running a live task)
  size_t abandoned_threads = 0;    // threads still inside an abandoned task
  size_t idle_workers = 0;         // threads waiting on work_cv (the poller included)
  bool polling = false;            // one idle worker looks at the queue every idle_poll

  CycleReport cycle;
  CycleOptions cycle_options;
  bool cycle_queue_stalled = false;  // a full-queue submit of this cycle recorded its task as failed

  uint64_t total_submitted = 0;
  uint64_t total_completed = 0;
  uint64_t total_failed = 0;
  uint64_t total_cancelled = 0;
  uint64_t total_rejected = 0;
  uint64_t total_abandoned = 0;
  uint64_t total_cycles = 0;
  uint64_t total_aborts = 0;
  uint64_t threads_started = 0;
  uint64_t queue_high_water = 0;

  LatencyHistogram submit_latency;
  LatencyHistogram queue_wait;
  LatencyHistogram task_latency;
  LatencyHistogram barrier_wait;

  static void workerMain(std::shared_ptr<Core> core);
  void startThreadsLocked();
  /// Counts the outcome; returns the status unless the cycle kept it, for the caller to destroy
  /// outside the lock (its payload may be a Python object whose release takes the GIL).
  Status recordOutcomeLocked(const TaskLabel& label, Status status, bool finisher);
  bool drainedLocked() const { return queue.empty() && running.empty(); }
  Status timeoutStatusLocked() const;
};

namespace {
// Set on each worker thread so that a task calling back into its own writer's barrier is refused
// instead of waiting for itself forever.
thread_local const AsyncWriter::Core* tls_current_core = nullptr;
}  // namespace

const char* writerStateName(WriterState state) {
  switch (state) {
    case WriterState::kIdle: return "idle";
    case WriterState::kAccepting: return "accepting";
    case WriterState::kDraining: return "draining";
    case WriterState::kAborting: return "aborting";
  }
  return "unknown";
}

size_t defaultNumThreads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return std::clamp<size_t>(hw == 0 ? 1 : hw, 1, 8);
}

Status validateWriterOptions(const WriterOptions& options) {
  if (options.queue_capacity == 0 || options.queue_capacity > (size_t{1} << 32)) {
    return Status::InvalidArgument("queue_capacity must be in [1, 2^32], got " + std::to_string(options.queue_capacity));
  }
  if (options.num_threads > 1024) {
    return Status::InvalidArgument("num_threads must be at most 1024 (0 picks a default), got " +
                                   std::to_string(options.num_threads));
  }
  if (options.max_abandoned_threads > 1024) {
    return Status::InvalidArgument("max_abandoned_threads must be at most 1024 (0 means num_threads), got " +
                                   std::to_string(options.max_abandoned_threads));
  }
  if (options.submit_timeout.count() < 0) return Status::InvalidArgument("submit_timeout must not be negative");
  if (options.abort_timeout.count() < 0) return Status::InvalidArgument("abort_timeout must not be negative");
  if (options.idle_poll && (options.idle_poll->count() < 0 || *options.idle_poll > std::chrono::seconds(1))) {
    return Status::InvalidArgument("idle_poll must be in [0, 1 s] (0: submit wakes a worker), got " +
                                   std::to_string(options.idle_poll->count()) + " us");
  }
  if (options.worker_nice < 0 || options.worker_nice > 19) {
    return Status::InvalidArgument("worker_nice must be in [0, 19] (0 keeps the caller's priority), got " +
                                   std::to_string(options.worker_nice));
  }
  return Status::Ok();
}

void AsyncWriter::Core::startThreadsLocked() {
  // Past the bound, threads stuck in a store are not replaced: the pool waits for calls to return.
  if (abandoned_threads > max_abandoned_threads) return;
  while (live_threads < target_threads && !shutting_down) {
    try {
      std::thread(workerMain, shared_from_this()).detach();
    } catch (const std::exception& e) {
      // Out of threads: the pool serves with fewer until abandoned calls return and rejoin.
      std::cerr << "kvdump: could not start a writer thread: " << e.what() << std::endl;
      return;
    }
    ++live_threads;
    ++threads_started;
  }
}

void AsyncWriter::Core::workerMain(std::shared_ptr<Core> core) {
  tls_current_core = core.get();
  if (core->options.worker_nice > 0) {
    Status lowered = lowerCurrentThreadPriority(core->options.worker_nice);
    // A platform without per-thread priorities runs the workers as they are: that is not an error.
    if (!lowered.ok() && lowered.code() != StatusCode::kUnsupported) {
      std::cerr << "kvdump: writer thread keeps the caller's priority: " << lowered.message() << std::endl;
    }
  }
  std::unique_lock<std::mutex> lock(core->mu);
  for (;;) {
    auto has_work = [&] { return core->shutting_down || !core->queue.empty(); };
    ++core->idle_workers;
    const std::chrono::microseconds poll = *core->options.idle_poll;  // set by the constructor
    if (poll.count() > 0 && core->state == WriterState::kAccepting && !core->polling) {
      core->polling = true;
      core->work_cv.wait_for(lock, poll, has_work);
      core->polling = false;
    } else {
      core->work_cv.wait(lock, has_work);
    }
    --core->idle_workers;
    if (!has_work()) continue;       // a poll found nothing: look again, or sleep once the cycle ends
    if (core->queue.empty()) break;  // shutting down with nothing left
    QueuedTask item = std::move(core->queue.front());
    core->queue.pop_front();
    // A backlog is shared out by the workers themselves, so the submitting thread pays for at most
    // the first wake of a burst.
    const bool wake_peer = !core->queue.empty() && core->idle_workers > 0;
    auto run = std::make_shared<TaskRun>();
    run->label = std::move(item.label);
    run->started = Clock::now();
    run->finisher = item.finisher;
    run->control.setCycle(core->generation);
    run->control.setRequest(&run->label.request);
    core->running.push_back(run);
    lock.unlock();
    core->space_cv.notify_one();
    if (wake_peer) core->work_cv.notify_one();
    core->queue_wait.record(nanosSince(item.enqueued));

    Status status;
    try {
      status = item.fn(run->control);
    } catch (abi::__forced_unwind&) {
      throw;  // thread cancellation (e.g. the interpreter exiting under a Python task) must unwind
    } catch (const std::exception& e) {
      status = Status::TaskFailed(std::string("task threw: ") + e.what());
    } catch (...) {
      status = Status::TaskFailed("task threw a non-standard exception");
    }
    // Release captured state (tensors, buffers) before the barrier can observe completion, so
    // that waitAllDone returning means the writer holds nothing of the caller's.
    item.fn = nullptr;
    core->task_latency.record(nanosSince(run->started));

    lock.lock();
    if (run->control.finish()) {
      // abort() gave this task up and already accounted for it; rejoin if the pool is short.
      --core->abandoned_threads;
      core->idle_cv.notify_all();
      if (core->shutting_down || core->live_threads >= core->target_threads) return;
      ++core->live_threads;
      continue;
    }
    auto mine = std::find(core->running.begin(), core->running.end(), run);
    if (mine != core->running.end()) core->running.erase(mine);
    Status unkept = core->recordOutcomeLocked(run->label, std::move(status), run->finisher);
    if (core->drainedLocked()) core->idle_cv.notify_all();
    if (unkept.payload()) {
      // A thread holding the GIL may be waiting for this lock (e.g. reading the state).
      lock.unlock();
      unkept = Status();
      lock.lock();
    }
  }
  --core->live_threads;
  core->idle_cv.notify_all();
}

Status AsyncWriter::Core::recordOutcomeLocked(const TaskLabel& label, Status status, bool finisher) {
  if (status.ok() && finisher) return Status::Ok();
  if (status.ok()) {
    ++cycle.completed;
    ++total_completed;
    return Status::Ok();
  }
  ++cycle.failed;
  ++total_failed;
  if (label.request.empty()) {
    cycle.empty_request_failed = true;
  } else {
    cycle.failed_requests.insert(label.request);
  }
  if (cycle.first_failure) return status;
  cycle.first_failure = TaskFailure{label, std::move(status)};
  return Status::Ok();
}

Status AsyncWriter::Core::timeoutStatusLocked() const {
  std::string message = "deadline passed with " + std::to_string(queue.size()) + " queued and " +
                        std::to_string(running.size()) + " running task(s)";
  if (running.empty()) return Status::Timeout(message);
  const auto oldest = std::min_element(running.begin(), running.end(),
                                       [](const auto& a, const auto& b) { return a->started < b->started; });
  const TaskRun& run = **oldest;
  std::string activity = run.control.activity();
  message += "; the oldest, '" + run.label.text() + "', has run " + secondsText(Clock::now() - run.started);
  Status status = Status::Timeout(message + (activity.empty() ? "" : ", in a store call"));
  if (!activity.empty()) status.withKey(std::move(activity));
  return status;
}

AsyncWriter::AsyncWriter(WriterOptions options) {
  options.queue_capacity = std::max<size_t>(options.queue_capacity, 1);
  options.idle_poll = options.idle_poll.value_or(std::chrono::microseconds(0));  // unset: wake-ups
  core_ = std::make_shared<Core>(std::move(options));
  const WriterOptions& o = core_->options;
  core_->target_threads = o.num_threads == 0 ? defaultNumThreads() : o.num_threads;
  core_->max_abandoned_threads = o.max_abandoned_threads == 0 ? core_->target_threads : o.max_abandoned_threads;
  // Threads start with the first cycle: a writer used only for synchronous work never starts any.
}

AsyncWriter::~AsyncWriter() {
  if (forkedAway()) {
    // Destroying the copied locks and condition variables could wait for threads of the parent.
    new std::shared_ptr<Core>(std::move(core_));  // NOLINT: left to the process's end on purpose
    return;
  }
  close();
}

bool AsyncWriter::forkedAway() const { return g_forks.load(std::memory_order_relaxed) != core_->forks_at_creation; }

bool AsyncWriter::calledFromOwnTask() const { return tls_current_core == core_.get(); }

namespace {
Status forkedAwayStatus(const char* call) {
  return Status::Lifecycle(std::string(call) +
                           " in a process forked from the one that made this writer: its threads do not exist "
                           "here; make a new writer in this process");
}
}  // namespace

void AsyncWriter::close(std::optional<std::chrono::nanoseconds> timeout) {
  if (forkedAway()) return;
  AbortReport report;
  bool had_work = false;
  {
    std::lock_guard<std::mutex> lock(core_->mu);
    if (core_->shutting_down) return;
    core_->closing = true;
    had_work = core_->state != WriterState::kIdle || !core_->drainedLocked();
  }
  if (had_work) abort(&report, timeout);
  {
    std::unique_lock<std::mutex> lock(core_->mu);
    core_->shutting_down = true;
    core_->work_cv.notify_all();
    core_->space_cv.notify_all();
    // Idle threads exit at once; threads left in abandoned calls exit when their call returns,
    // holding only the shared core and what their task captured. Closed from one of its own tasks
    // (the last reference dropped there), the writer cannot wait for itself: its threads still exit.
    if (tls_current_core != core_.get()) {
      core_->idle_cv.wait(lock, [&] { return core_->live_threads == 0; });
    }
  }
  if (had_work) {
    if (core_->options.on_destroy_report) {
      core_->options.on_destroy_report(report);
    } else {
      logDestroyReport(report);
    }
  }
}

size_t AsyncWriter::numThreads() const { return core_->target_threads; }

Status AsyncWriter::init(CycleOptions options) {
  if (forkedAway()) return forkedAwayStatus("init()");
  CycleReport previous;  // destroyed after the lock is released, like every status with a payload
  std::lock_guard<std::mutex> lock(core_->mu);
  Core& c = *core_;
  if (c.shutting_down) return Status::Lifecycle("init() on a closed writer");
  if (c.state != WriterState::kIdle) {
    return Status::Lifecycle(std::string("init() while a cycle is open (state ") + writerStateName(c.state) +
                             "); call waitAllDone() or abort() first");
  }
  previous = std::exchange(c.cycle, CycleReport{});
  c.cycle_options = options;
  c.cycle_queue_stalled = false;
  c.finisher_started = false;
  c.state = WriterState::kAccepting;
  c.last_cycle_aborted = false;
  c.startThreadsLocked();  // the first cycle's threads, or replacements of abandoned ones
  return Status::Ok();
}

Status AsyncWriter::submit(Task task, TaskLabel label, std::optional<std::chrono::nanoseconds> timeout,
                           const std::function<bool()>& interrupted) {
  return submit(controlled(std::move(task)), std::move(label), timeout, interrupted);
}

// [[gnu::hot]]: on the calling thread's path of a layer write (see layer_write_call.cc).
[[gnu::hot]] Status AsyncWriter::submit(ControlledTask task, TaskLabel label,
                                        std::optional<std::chrono::nanoseconds> timeout,
                                        const std::function<bool()>& interrupted) {
  const auto start = Clock::now();
  if (!task) return Status::InvalidArgument("submit() of an empty task");
  if (forkedAway()) return forkedAwayStatus("submit()");  // before a lock the fork may have copied held
  Core& c = *core_;
  std::unique_lock<std::mutex> lock(c.mu);
  if (c.state != WriterState::kAccepting) {
    ++c.total_rejected;
    if (c.state == WriterState::kIdle) {
      return Status::Lifecycle(c.last_cycle_aborted ? "submit() after abort(): call init() to open a new cycle"
                                                    : "submit() before init(): no cycle is open");
    }
    return Status::Lifecycle(std::string("submit() while the cycle is ") + writerStateName(c.state));
  }
  if (c.queue.size() >= c.options.queue_capacity) {
    const bool record = c.cycle_options.full_queue_fails_request;
    const auto wait_for = record && c.cycle_queue_stalled ? std::chrono::nanoseconds(0)
                                                          : timeout.value_or(c.options.submit_timeout);
    auto room = [&] { return c.queue.size() < c.options.queue_capacity || c.state != WriterState::kAccepting; };
    bool interrupted_wait;
    const bool got_space = waitReady(c.space_cv, lock, deadlineAfter(wait_for), room, interrupted, &interrupted_wait);
    if (interrupted_wait) {
      ++c.total_rejected;
      return Status::Cancelled("submit() was interrupted while it waited for queue space; task '" + label.text() +
                               "' was not queued");
    }
    if (c.state != WriterState::kAccepting) {
      ++c.total_rejected;
      return Status::Lifecycle("the cycle was closed or aborted while submit() waited for queue space");
    }
    if (!got_space) {
      Status full = Status::Timeout("queue full (" + std::to_string(c.options.queue_capacity) +
                                    " tasks) for the whole submit deadline; task '" + label.text() +
                                    "' was not queued");
      if (!record) {
        ++c.total_rejected;
        return full;
      }
      // The store is stalled: waiting again for each of the cycle's tasks would hold the caller
      // that long per task, for the same outcome.
      c.cycle_queue_stalled = true;
      ++c.total_submitted;
      ++c.cycle.submitted;
      Status unkept = c.recordOutcomeLocked(label, std::move(full), false);
      lock.unlock();
      task = nullptr;  // what it captured is the caller's, released outside the lock
      return Status::Ok();
    }
  }
  c.queue.push_back(Core::QueuedTask{std::move(task), std::move(label), Clock::now()});
  c.queue_high_water = std::max<uint64_t>(c.queue_high_water, c.queue.size());
  ++c.total_submitted;
  ++c.cycle.submitted;
  // The forward's thread wakes a worker only when no idle worker is polling and either none is
  // running (a running one comes back to the queue when its task ends) or a task already waits: a
  // wake is a syscall, and the woken worker competes with the forward for the cores. waitAllDone
  // wakes every idle worker, so a task behind a slow store call waits at most until the barrier
  // for an idle peer.
  const bool wake = c.idle_workers > 0 && !c.polling && (c.running.empty() || c.queue.size() > 1);
  lock.unlock();
  if (wake) c.work_cv.notify_one();
  c.submit_latency.record(nanosSince(start));
  return Status::Ok();
}

Status AsyncWriter::waitAllDone(std::optional<std::chrono::nanoseconds> timeout, CycleReport* report,
                                const std::function<bool()>& interrupted) {
  Core& c = *core_;
  if (tls_current_core == &c) return Status::Lifecycle("waitAllDone() called from one of the writer's own tasks");
  if (forkedAway()) return forkedAwayStatus("waitAllDone()");
  const auto start = Clock::now();
  const auto deadline = timeout ? deadlineAfter(*timeout) : Clock::time_point::max();
  std::unique_lock<std::mutex> lock(c.mu);
  if (c.barrier_waiting) return Status::Lifecycle("waitAllDone() while another thread waits on the same cycle");
  const bool resumable = c.state == WriterState::kDraining && c.finisher_started;
  if (c.state != WriterState::kAccepting && !resumable) {
    return Status::Lifecycle(c.state == WriterState::kIdle
                                 ? "waitAllDone() without init()"
                                 : std::string("waitAllDone() while the cycle is ") + writerStateName(c.state));
  }
  c.state = WriterState::kDraining;
  c.barrier_waiting = true;
  if (!c.queue.empty()) c.work_cv.notify_all();
  const uint64_t generation = c.generation;
  // Submitters blocked on a full queue must learn that the cycle is closing.
  c.space_cv.notify_all();
  auto drained = [&] { return c.generation != generation || (c.state == WriterState::kDraining && c.drainedLocked()); };
  for (;;) {
    bool stopped;
    const bool done = waitReady(c.idle_cv, lock, deadline, drained, interrupted, &stopped);
    if (c.generation != generation) {  // abort() cleared barrier_waiting when it ended the cycle
      c.barrier_wait.record(nanosSince(start));
      if (c.closing) return Status::Lifecycle("the writer was closed while waitAllDone() waited");
      return Status::Cancelled("the cycle was aborted while waitAllDone() waited");
    }
    if (!done) {
      c.barrier_waiting = false;
      if (!c.finisher_started) c.state = WriterState::kAccepting;
      c.barrier_wait.record(nanosSince(start));
      if (stopped) {
        return Status::Cancelled("waitAllDone() was interrupted; the cycle stays open: wait again or abort()");
      }
      Status status = c.timeoutStatusLocked();
      return Status(StatusCode::kTimeout, "waitAllDone() " + status.message() +
                                              "; the cycle stays open: wait again or abort()")
          .withKey(status.key());
    }
    if (c.finisher_started || !c.options.cycle_finisher) break;
    // Every task finished: let the finisher see the outcome and queue the cycle's last task.
    c.finisher_started = true;
    CycleReport snapshot = c.cycle;
    snapshot.cycle = generation;
    lock.unlock();
    ControlledTask last;
    try {
      last = c.options.cycle_finisher(snapshot);
    } catch (const std::exception& e) {
      last = [what = std::string(e.what())](TaskControl&) {
        return Status::Internal("the cycle finisher threw: " + what);
      };
    }
    lock.lock();
    if (c.generation != generation) continue;  // aborted meanwhile: reported above
    if (!last) break;
    c.queue.push_back(
        Core::QueuedTask{std::move(last), TaskLabel{"commit records of the cycle", -1, "", nullptr}, Clock::now(),
                         true});
    c.work_cv.notify_one();
  }
  CycleReport finished = std::move(c.cycle);
  c.cycle = CycleReport{};
  c.state = WriterState::kIdle;
  c.barrier_waiting = false;
  c.finisher_started = false;
  ++c.generation;
  ++c.total_cycles;
  c.barrier_wait.record(nanosSince(start));
  lock.unlock();
  c.space_cv.notify_all();
  Status result = finished.first_failure ? finished.first_failure->status : Status::Ok();
  if (report) *report = std::move(finished);
  return result;
}

Status AsyncWriter::abort(AbortReport* report, std::optional<std::chrono::nanoseconds> timeout) {
  Core& c = *core_;
  if (tls_current_core == &c) return Status::Lifecycle("abort() called from one of the writer's own tasks");
  if (forkedAway()) return forkedAwayStatus("abort()");
  const auto grace = timeout.value_or(std::chrono::duration_cast<std::chrono::nanoseconds>(c.options.abort_timeout));
  if (grace.count() < 0) return Status::InvalidArgument("abort() timeout must not be negative");
  const auto deadline = deadlineAfter(grace);
  std::deque<Core::QueuedTask> cancelled;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.state == WriterState::kAborting) return Status::Lifecycle("abort() while another abort() runs");
    if (c.state == WriterState::kIdle && c.drainedLocked()) {
      if (report) *report = AbortReport{};
      return Status::Ok();
    }
    c.state = WriterState::kAborting;
    for (auto& run : c.running) run->control.markCycleAborted();
    cancelled.swap(c.queue);
    c.total_cancelled += cancelled.size();
  }
  c.space_cv.notify_all();
  AbortReport local;
  local.cancelled = cancelled.size();
  // Destroy the cancelled closures outside the lock: their destructors may be slow or re-enter
  // binding code (e.g. take the GIL to drop a Python callable).
  cancelled.clear();
  std::vector<std::shared_ptr<TaskRun>> given_up;
  {
    std::unique_lock<std::mutex> lock(c.mu);
    const size_t running_at_start = c.running.size();
    auto finished = [&] { return c.running.empty(); };
    if (deadline == Clock::time_point::max()) {
      c.idle_cv.wait(lock, finished);
    } else {
      c.idle_cv.wait_until(lock, deadline, finished);
    }
    for (auto& run : c.running) {
      // Accounted here, under the lock, so the worker sees a consistent count when it returns. A
      // task that sealed itself is returning: it stays in `running` and is waited for below.
      if (!run->control.abandon()) continue;
      ++c.abandoned_threads;
      --c.live_threads;
      ++c.total_abandoned;
      given_up.push_back(run);
    }
    c.running.erase(std::remove_if(c.running.begin(), c.running.end(),
                                   [](const std::shared_ptr<TaskRun>& run) { return run->control.abandoned(); }),
                    c.running.end());
    local.finished_running = running_at_start - given_up.size();
    local.abandoned = given_up.size();
    if (!given_up.empty()) {
      const TaskRun& first = *given_up.front();
      Status timed_out = Status::Timeout("abandoned by abort() after " + secondsText(Clock::now() - first.started) +
                                         " of running; nothing it finishes later is published");
      std::string activity = first.control.activity();
      if (!activity.empty()) timed_out.withKey(std::move(activity));
      local.first_abandoned = TaskFailure{first.label, std::move(timed_out)};
    }
    c.startThreadsLocked();  // replaces the threads left in abandoned calls, up to the bound
  }
  // A task abandoned inside a gather or scatter finishes that section first: after this, none of
  // them touches the caller's memory again.
  for (auto& run : given_up) run->control.awaitCallerMemoryReleased();
  {
    std::unique_lock<std::mutex> lock(c.mu);
    c.idle_cv.wait(lock, [&] { return c.running.empty(); });  // only sealed tasks, already returning
    local.failed = c.cycle.failed;
    local.first_failure = std::move(c.cycle.first_failure);
    c.cycle = CycleReport{};
    c.state = WriterState::kIdle;
    c.last_cycle_aborted = true;
    c.finisher_started = false;
    c.barrier_waiting = false;
    local.cycle = c.generation;
    ++c.generation;
    ++c.total_aborts;
  }
  c.idle_cv.notify_all();  // a barrier waiting on another thread returns CANCELLED
  c.space_cv.notify_all();
  if (report) *report = std::move(local);
  return Status::Ok();
}

uint64_t AsyncWriter::cancelRequest(const std::string& request) {
  Core& c = *core_;
  std::deque<Core::QueuedTask> cancelled;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto keep = std::stable_partition(c.queue.begin(), c.queue.end(),
                                      [&](const Core::QueuedTask& t) { return t.label.request != request; });
    std::move(keep, c.queue.end(), std::back_inserter(cancelled));
    c.queue.erase(keep, c.queue.end());
    c.cycle.cancelled += cancelled.size();
    c.total_cancelled += cancelled.size();
    if (c.state != WriterState::kIdle) c.cycle.cancelled_requests.insert(request);
    if (c.drainedLocked()) c.idle_cv.notify_all();
  }
  c.space_cv.notify_all();
  const uint64_t n = cancelled.size();
  cancelled.clear();
  return n;
}

WriterState AsyncWriter::state() const {
  std::lock_guard<std::mutex> lock(core_->mu);
  return core_->state;
}

WriterStats AsyncWriter::stats() const {
  const Core& c = *core_;
  WriterStats s;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    s.submitted = c.total_submitted;
    s.completed = c.total_completed;
    s.failed = c.total_failed;
    s.cancelled = c.total_cancelled;
    s.rejected = c.total_rejected;
    s.abandoned = c.total_abandoned;
    s.cycles = c.total_cycles;
    s.aborts = c.total_aborts;
    s.queue_high_water = c.queue_high_water;
    s.queue_depth = c.queue.size();
    s.running = c.running.size();
    s.threads_in_abandoned_calls = c.abandoned_threads;
    s.threads_started = c.threads_started;
  }
  s.num_threads = c.target_threads;
  s.queue_capacity = c.options.queue_capacity;
  s.idle_poll = *c.options.idle_poll;
  s.submit_latency = c.submit_latency.summary();
  s.queue_wait = c.queue_wait.summary();
  s.task_latency = c.task_latency.summary();
  s.barrier_wait = c.barrier_wait.summary();
  return s;
}

}  // namespace kvdump

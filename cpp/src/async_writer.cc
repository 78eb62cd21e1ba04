#include "kvdump/async_writer.h"

#include <algorithm>
#include <exception>
#include <iostream>
#include <utility>

namespace kvdump {
namespace {

using Clock = std::chrono::steady_clock;

// Set on each worker thread so that a task calling back into its own writer's barrier is refused
// instead of waiting for itself forever.
thread_local const AsyncWriter* tls_current_writer = nullptr;

uint64_t nanosSince(Clock::time_point start) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
}

void logDestroyReport(const AbortReport& r) {
  std::cerr << "kvdump: AsyncWriter destroyed with an open cycle: cancelled " << r.cancelled
            << " queued task(s), waited for " << r.finished_running << " running task(s), "
            << r.failed << " failed";
  if (r.first_failure) {
    std::cerr << " (first: " << r.first_failure->label.label << ": "
              << r.first_failure->status.toString() << ")";
  }
  std::cerr << std::endl;
}

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
  if (options.queue_capacity == 0) return Status::InvalidArgument("queue_capacity must be at least 1");
  if (options.num_threads > 1024) {
    return Status::InvalidArgument("num_threads must be at most 1024 (0 picks a default), got " +
                                   std::to_string(options.num_threads));
  }
  if (options.submit_timeout.count() < 0) return Status::InvalidArgument("submit_timeout must not be negative");
  return Status::Ok();
}

namespace {
WriterOptions sanitized(WriterOptions options) {
  options.queue_capacity = std::max<size_t>(options.queue_capacity, 1);
  return options;
}
}  // namespace

AsyncWriter::AsyncWriter(WriterOptions options) : options_(sanitized(std::move(options))) {
  const size_t n = options_.num_threads == 0 ? defaultNumThreads() : options_.num_threads;
  threads_.reserve(n);
  for (size_t i = 0; i < n; ++i) threads_.emplace_back([this] { workerLoop(); });
}

AsyncWriter::~AsyncWriter() {
  AbortReport report;
  bool had_work = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    had_work = state_ != WriterState::kIdle || !queue_.empty() || running_ > 0;
  }
  if (had_work) abort(&report);
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutting_down_ = true;
  }
  work_cv_.notify_all();
  space_cv_.notify_all();
  for (auto& t : threads_) t.join();
  if (had_work) {
    if (options_.on_destroy_report) {
      options_.on_destroy_report(report);
    } else {
      logDestroyReport(report);
    }
  }
}

bool AsyncWriter::onWorkerThread() const { return tls_current_writer == this; }

Status AsyncWriter::init() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != WriterState::kIdle) {
    return Status::Lifecycle(std::string("init() while a cycle is open (state ") +
                             writerStateName(state_) + "); call waitAllDone() or abort() first");
  }
  resetCycleLocked();
  state_ = WriterState::kAccepting;
  last_cycle_aborted_ = false;
  return Status::Ok();
}

Status AsyncWriter::submit(Task task, TaskLabel label, std::optional<std::chrono::nanoseconds> timeout) {
  const auto start = Clock::now();
  if (!task) return Status::InvalidArgument("submit() of an empty task");
  std::unique_lock<std::mutex> lock(mu_);
  if (state_ != WriterState::kAccepting) {
    ++total_rejected_;
    if (state_ == WriterState::kIdle) {
      return Status::Lifecycle(last_cycle_aborted_ ? "submit() after abort(): call init() to open a new cycle"
                                                   : "submit() before init(): no cycle is open");
    }
    return Status::Lifecycle(std::string("submit() while the cycle is ") + writerStateName(state_));
  }
  if (queue_.size() >= options_.queue_capacity) {
    const auto wait_for = timeout.value_or(options_.submit_timeout);
    const bool got_space = space_cv_.wait_for(lock, wait_for, [&] {
      return queue_.size() < options_.queue_capacity || state_ != WriterState::kAccepting;
    });
    if (state_ != WriterState::kAccepting) {
      ++total_rejected_;
      return Status::Lifecycle("the cycle was closed or aborted while submit() waited for queue space");
    }
    if (!got_space) {
      ++total_rejected_;
      return Status::Timeout("queue full (" + std::to_string(options_.queue_capacity) +
                             " tasks) for the whole submit deadline; task '" + label.label +
                             "' was not queued");
    }
  }
  queue_.push_back(QueuedTask{std::move(task), std::move(label), Clock::now()});
  queue_high_water_ = std::max<uint64_t>(queue_high_water_, queue_.size());
  ++total_submitted_;
  ++cycle_.submitted;
  lock.unlock();
  work_cv_.notify_one();
  submit_latency_.record(nanosSince(start));
  return Status::Ok();
}

void AsyncWriter::workerLoop() {
  tls_current_writer = this;
  for (;;) {
    QueuedTask item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return shutting_down_ || !queue_.empty(); });
      if (queue_.empty()) return;  // shutting down with nothing left
      item = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    space_cv_.notify_one();
    queue_wait_.record(nanosSince(item.enqueued));

    const auto start = Clock::now();
    Status status;
    try {
      status = item.fn();
    } catch (const std::exception& e) {
      status = Status::TaskFailed(std::string("task threw: ") + e.what());
    } catch (...) {
      status = Status::TaskFailed("task threw a non-standard exception");
    }
    // Release captured state (tensors, buffers) before the barrier can observe completion, so
    // that waitAllDone returning means the writer holds nothing of the caller's.
    item.fn = nullptr;
    task_latency_.record(nanosSince(start));

    {
      std::lock_guard<std::mutex> lock(mu_);
      --running_;
      recordOutcomeLocked(item.label, std::move(status));
      if (queue_.empty() && running_ == 0) idle_cv_.notify_all();
    }
  }
}

void AsyncWriter::recordOutcomeLocked(const TaskLabel& label, Status status) {
  if (status.ok()) {
    ++cycle_.completed;
    ++total_completed_;
    return;
  }
  ++cycle_.failed;
  ++total_failed_;
  if (!cycle_.first_failure) cycle_.first_failure = TaskFailure{label, std::move(status)};
}

void AsyncWriter::resetCycleLocked() { cycle_ = CycleReport{}; }

Status AsyncWriter::waitAllDone(std::optional<std::chrono::nanoseconds> timeout, CycleReport* report) {
  if (onWorkerThread()) return Status::Lifecycle("waitAllDone() called from one of the writer's own tasks");
  const auto start = Clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  if (state_ != WriterState::kAccepting) {
    return Status::Lifecycle(state_ == WriterState::kIdle
                                 ? "waitAllDone() without init()"
                                 : std::string("waitAllDone() while the cycle is ") + writerStateName(state_));
  }
  state_ = WriterState::kDraining;
  const uint64_t generation = generation_;
  // Submitters blocked on a full queue must learn that the cycle is closing.
  space_cv_.notify_all();
  // While an abort runs the queue is empty but the cycle is not finished: only abort may end it.
  auto drained = [&] {
    return generation_ != generation || (state_ == WriterState::kDraining && queue_.empty() && running_ == 0);
  };
  bool done = true;
  if (timeout) {
    done = idle_cv_.wait_for(lock, *timeout, drained);
  } else {
    idle_cv_.wait(lock, drained);
  }
  barrier_wait_.record(nanosSince(start));
  if (generation_ != generation) return Status::Cancelled("the cycle was aborted while waitAllDone() waited");
  if (!done) {
    if (state_ == WriterState::kDraining) state_ = WriterState::kAccepting;
    return Status::Timeout("waitAllDone() deadline passed with " + std::to_string(queue_.size()) +
                           " queued and " + std::to_string(running_) + " running task(s); the cycle stays "
                           "open: wait again or abort()");
  }
  CycleReport finished = std::move(cycle_);
  resetCycleLocked();
  state_ = WriterState::kIdle;
  ++generation_;
  ++total_cycles_;
  Status result = finished.first_failure ? finished.first_failure->status : Status::Ok();
  if (report) *report = std::move(finished);
  return result;
}

Status AsyncWriter::abort(AbortReport* report) {
  if (onWorkerThread()) return Status::Lifecycle("abort() called from one of the writer's own tasks");
  std::deque<QueuedTask> cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == WriterState::kAborting) return Status::Lifecycle("abort() while another abort() runs");
    if (state_ == WriterState::kIdle && queue_.empty() && running_ == 0) {
      if (report) *report = AbortReport{};
      return Status::Ok();
    }
    state_ = WriterState::kAborting;
    cancelled.swap(queue_);
    total_cancelled_ += cancelled.size();
  }
  space_cv_.notify_all();
  AbortReport local;
  local.cancelled = cancelled.size();
  // Destroy the cancelled closures outside the lock: their destructors may be slow or re-enter
  // binding code (e.g. take the GIL to drop a Python callable).
  cancelled.clear();
  {
    std::unique_lock<std::mutex> lock(mu_);
    local.finished_running = running_;
    idle_cv_.wait(lock, [&] { return running_ == 0; });
    local.failed = cycle_.failed;
    local.first_failure = std::move(cycle_.first_failure);
    resetCycleLocked();
    state_ = WriterState::kIdle;
    last_cycle_aborted_ = true;
    ++generation_;
    ++total_aborts_;
  }
  idle_cv_.notify_all();  // a barrier waiting on another thread returns CANCELLED
  if (report) *report = std::move(local);
  return Status::Ok();
}

uint64_t AsyncWriter::cancelRequest(const std::string& request) {
  std::deque<QueuedTask> cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto keep = std::stable_partition(queue_.begin(), queue_.end(),
                                      [&](const QueuedTask& t) { return t.label.request != request; });
    std::move(keep, queue_.end(), std::back_inserter(cancelled));
    queue_.erase(keep, queue_.end());
    cycle_.cancelled += cancelled.size();
    total_cancelled_ += cancelled.size();
    if (queue_.empty() && running_ == 0) idle_cv_.notify_all();
  }
  space_cv_.notify_all();
  const uint64_t n = cancelled.size();
  cancelled.clear();
  return n;
}

WriterState AsyncWriter::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

WriterStats AsyncWriter::stats() const {
  WriterStats s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.submitted = total_submitted_;
    s.completed = total_completed_;
    s.failed = total_failed_;
    s.cancelled = total_cancelled_;
    s.rejected = total_rejected_;
    s.cycles = total_cycles_;
    s.aborts = total_aborts_;
    s.queue_high_water = queue_high_water_;
    s.queue_depth = queue_.size();
    s.running = running_;
  }
  s.num_threads = threads_.size();
  s.queue_capacity = options_.queue_capacity;
  s.submit_latency = submit_latency_.summary();
  s.queue_wait = queue_wait_.summary();
  s.task_latency = task_latency_.summary();
  s.barrier_wait = barrier_wait_.summary();
  return s;
}

}  // namespace kvdump

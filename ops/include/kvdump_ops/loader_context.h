// LoaderContext: one user-facing loader. A transfer engine (pool, store, staging, key space) of its
// own, and the per-layer completion board its asynchronous loads report to. Torch-free header so the
// pybind11 binding never sees libtorch headers.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "kvdump/completion_board.h"
#include "kvdump_ops/transfer_engine.h"

namespace kvdump {

/// Owns a TransferEngine whose cycles are loading sessions (the pool's init() opens one, its
/// waitAllDone() is the barrier); queued loads report per layer to a CompletionBoard that waiters
/// read. Nothing here writes or commits. Thread-safe as its parts are.
class LoaderContext {
 public:
  /// One load, run on a worker: reads into the caller's cache, inside caller-memory sections of
  /// the control it gets.
  using LoadTask = std::function<Status(const TransferTarget&, TaskControl&)>;

  /// A loader on `store`; INVALID_ARGUMENT naming the bad option (see validateEngineOptions).
  static Result<std::shared_ptr<LoaderContext>> create(std::shared_ptr<CacheStore> store,
                                                       const EngineOptions& options);
  /// Aborts within abort_timeout, then wakes every waiter with LIFECYCLE.
  ~LoaderContext();
  LoaderContext(const LoaderContext&) = delete;
  LoaderContext& operator=(const LoaderContext&) = delete;

  /// The engine's pool, owned by the loader; thread-safe.
  AsyncWriter& pool() { return engine_->pool(); }
  /// The store, shared with the tasks; thread-safe.
  CacheStore& store() { return engine_->store(); }
  /// The staging pool, shared with the tasks; thread-safe.
  StagingPool& staging() { return engine_->staging(); }
  /// What load tasks share, shared with them; thread-safe as its parts are.
  const std::shared_ptr<TransferTarget>& target() const { return engine_->target(); }
  /// The key space, fixed at creation; safe to read from any thread.
  const KeySpace& keys() const { return engine_->keys(); }
  /// Per-layer completion of queued loads; shared so that a waiter outlives close.
  const std::shared_ptr<CompletionBoard>& board() const { return board_; }

  /// Queues `load` for `layer` in the open session: waitLayer(layer) then waits for it. On failure
  /// to queue, the layer's waiters get the same error.
  Status queue(uint32_t layer, LoadTask load);
  /// Cancels queued loads and abandons running ones at the deadline (an abandoned load never writes
  /// into the destination again); waiters get CANCELLED.
  Status abort(AbortReport* report, std::optional<std::chrono::nanoseconds> timeout);
  /// Closes the loader for good: aborts within `timeout`, then wakes every waiter with LIFECYCLE.
  void shutdown(std::optional<std::chrono::nanoseconds> timeout);

 private:
  LoaderContext() = default;

  std::shared_ptr<CompletionBoard> board_;
  std::unique_ptr<TransferEngine> engine_;
};

}  // namespace kvdump

// WriterContext: one user-facing writer = the lifecycle pool + the store it writes to + the staging
// pool + key settings + what the open cycle stored. Torch-free header so the pybind11 binding never
// sees libtorch headers.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "kvdump/async_writer.h"
#include "kvdump/block_key.h"
#include "kvdump/cache_store.h"
#include "kvdump/commit_ledger.h"
#include "kvdump/completion_board.h"
#include "kvdump/staging_pool.h"

namespace kvdump {

/// Options of a WriterContext; a plain value.
struct WriterContextOptions {
  WriterOptions writer;
  size_t staging_bytes = size_t{256} << 20;  // bound on bytes in flight between capture and store
  std::chrono::milliseconds staging_timeout{30000};  // how long a task waits for staging bytes
  HostAllocator staging_allocator;                   // empty: pageable host memory
  KeySpace keys;
  /// The layers this writer stores (a pipeline stage); empty: every layer written in a cycle, from 0.
  LayerRange layers;
};

/// What a task needs from its writer. Shared by the context and every task, so that a task left
/// in an abandoned store call can finish safely after its writer closed. Thread-safe as its parts are.
struct WriteTarget {
  std::shared_ptr<CacheStore> store;
  std::shared_ptr<StagingPool> staging;
  KeySpace keys;
  uint64_t key_space_fingerprint = 0;
  std::chrono::milliseconds staging_timeout{30000};
  LayerRange layers;
  mutable CommitLedger ledger;  // what the open cycle stored, per request and block (thread-safe)
  std::shared_ptr<CompletionBoard> loads;   // per-layer completion of asynchronous loads (decode side)
};

/// Owns an AsyncWriter and shares the WriteTarget with its tasks. After a successful barrier it
/// publishes, for every request that neither failed nor was cancelled, the longest prefix of its
/// blocks whose every expected layer stored (the cycle's last task, under the barrier's deadline).
/// Thread-safe as its parts are. The torch ops take it through a torch custom class that holds a
/// strong reference; that object claims the context once, by a ticket (see offer()).
class WriterContext {
 public:
  WriterContext(std::shared_ptr<CacheStore> store, WriterContextOptions options);
  ~WriterContext();
  WriterContext(const WriterContext&) = delete;
  WriterContext& operator=(const WriterContext&) = delete;

  AsyncWriter& writer() { return *writer_; }
  CacheStore& store() { return *target_->store; }
  StagingPool& staging() { return *target_->staging; }
  const std::shared_ptr<WriteTarget>& target() const { return target_; }
  /// Per-layer completion of asynchronous loads (decode side); shared so a waiter outlives close.
  const std::shared_ptr<CompletionBoard>& loads() const { return target_->loads; }
  const KeySpace& keys() const { return target_->keys; }
  const WriterContextOptions& options() const { return options_; }

  /// Opens a cycle.
  Status init();
  /// Aborts the open cycle (see AsyncWriter::abort), so nothing it stored is published, and cancels
  /// pending loads.
  Status abort(AbortReport* report, std::optional<std::chrono::nanoseconds> timeout);
  /// Closes the context's cycle for good: aborts within `timeout`, then wakes every load waiter
  /// with LIFECYCLE. The context stays valid but refuses work.
  void shutdown(std::optional<std::chrono::nanoseconds> timeout);

  /// Makes a context.
  static std::shared_ptr<WriterContext> create(std::shared_ptr<CacheStore> store, WriterContextOptions options);
  /// A one-shot ticket by which the torch side claims `context`. A pybind11 object cannot become a
  /// torch object without its bindings including libtorch, so the hand-over goes through this
  /// number: the Python writer offers, the torch custom class claims, and no call ever looks the
  /// context up again. Holds only a weak reference until claimed. Thread-safe.
  static int64_t offer(const std::shared_ptr<WriterContext>& context);
  /// The live context offered under `ticket`, which stops naming it; nullptr when the ticket was
  /// never issued, was already claimed, or its context is gone. Thread-safe.
  static std::shared_ptr<WriterContext> claim(int64_t ticket);

 private:
  const WriterContextOptions options_;
  std::shared_ptr<WriteTarget> target_;
  std::unique_ptr<AsyncWriter> writer_;
};

}  // namespace kvdump

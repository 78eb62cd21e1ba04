// TransferEngine: what a writer and a loader both run on. The lifecycle pool, the store, the staging
// pool and the key space, built once from one options struct. Torch-free, so the pybind11 binding
// never sees libtorch headers.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kvdump/async_writer.h"
#include "kvdump/block_key.h"
#include "kvdump/cache_store.h"
#include "kvdump/staging_pool.h"

namespace kvdump {

/// How an engine is built; a plain value. Its defaults are the library's only ones: the Python
/// binding exposes this struct, and every Python default is read from it.
struct EngineOptions {
  WriterOptions pool;                                // threads, queue, deadlines, worker priority
  size_t staging_bytes = size_t{256} << 20;          // bound on bytes in flight between capture and store
  std::chrono::milliseconds staging_timeout{30000};  // how long a task waits for staging bytes
  /// Whose pinned host memory stages blocks: a device type ("cuda", "npu"), "cpu" for pageable
  /// memory, or "auto" for this process's accelerator when it has a device (else pageable).
  std::string staging_device = "auto";
  KeySpace keys;
};

/// Workers when EngineOptions::pool.num_threads is 0: the cores this process may run on that torch's
/// intra-op threads leave free, 1 to 8, so the forward and the workers never oversubscribe the
/// cores. Thread-safe.
size_t defaultEngineThreads();

/// How often an idle worker polls when EngineOptions::pool.idle_poll is unset: every 500 µs where
/// torch's intra-op threads leave one of this process's cores free (the workers then have a core of
/// their own, and a poll preempts no forward thread, while a wake-up would cost the forward's
/// thread a cross-CPU call), else 0 (each submit wakes a worker). Thread-safe.
std::chrono::microseconds defaultEngineIdlePoll();

/// INVALID_ARGUMENT naming the field at fault, for options no engine can run with (the pool's
/// rules, staging_bytes == 0, a negative staging_timeout, a bad key space). Pure.
Status validateEngineOptions(const EngineOptions& options);

/// What a task needs from its engine, filled by TransferEngine::create from EngineOptions. Shared by
/// the engine and every task, so that a task left in an abandoned store call can finish safely after
/// its engine closed. Thread-safe as its parts are.
struct TransferTarget {
  std::shared_ptr<CacheStore> store;
  std::shared_ptr<StagingPool> staging;
  KeySpace keys;
  uint64_t key_space_fingerprint = 0;
  std::chrono::milliseconds staging_timeout{};
};

/// The pool plus the target its tasks use. The caller makes the target (a writer's carries its
/// ledger too); the engine fills the shared part and starts the pool, whose cycles end with
/// `cycle_finisher` when one is given. Thread-safe as its parts are; the pool is closed first on
/// destruction, so no task outlives the engine except one left in an abandoned call.
class TransferEngine {
 public:
  /// Fills `target` (store, a staging pool registered with the store, the key space) from `options`,
  /// which must pass validateEngineOptions; INVALID_ARGUMENT naming staging_device when it names no
  /// usable device.
  static Result<std::unique_ptr<TransferEngine>> create(
      std::shared_ptr<TransferTarget> target, std::shared_ptr<CacheStore> store, const EngineOptions& options,
      std::function<ControlledTask(const CycleReport&)> cycle_finisher = nullptr);
  TransferEngine(const TransferEngine&) = delete;
  TransferEngine& operator=(const TransferEngine&) = delete;

  /// The lifecycle pool, owned by the engine; thread-safe.
  AsyncWriter& pool() { return *pool_; }
  /// What tasks share, shared with them; thread-safe as its parts are.
  const std::shared_ptr<TransferTarget>& target() const { return target_; }
  /// The store, shared with the tasks; thread-safe.
  CacheStore& store() { return *target_->store; }
  /// The staging pool, shared with the tasks; thread-safe.
  StagingPool& staging() { return *target_->staging; }
  /// The key space, fixed at creation; safe to read from any thread.
  const KeySpace& keys() const { return target_->keys; }

 private:
  TransferEngine(std::shared_ptr<TransferTarget> target, std::unique_ptr<AsyncWriter> pool)
      : target_(std::move(target)), pool_(std::move(pool)) {}

  std::shared_ptr<TransferTarget> target_;
  std::unique_ptr<AsyncWriter> pool_;
};

}  // namespace kvdump

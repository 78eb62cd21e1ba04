// WriterContext: one user-facing writer. A transfer engine (pool, store, staging, key space) plus
// what the open cycle stored, from which its barrier publishes commit records. Torch-free header so
// the pybind11 binding never sees libtorch headers.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "kvdump/block_key.h"
#include "kvdump/commit_claims.h"
#include "kvdump/commit_ledger.h"
#include "kvdump_ops/transfer_engine.h"

namespace kvdump {

/// What a write task needs from its writer: the engine's target plus the ledger of what the open
/// cycle stored and the layers a commit covers. Shared like its base. Thread-safe as its parts are.
struct WriteTarget : TransferTarget {
  /// The layers this writer stores (a pipeline stage); empty: every layer written in a cycle, from 0.
  LayerRange layers;
  mutable CommitLedger ledger;  // what the open cycle stored, per request and block (thread-safe)
  CommitClaims claims;          // which cycle is publishing each commit record (thread-safe)
};

/// Owns a TransferEngine whose tasks share a WriteTarget. After a successful barrier it publishes,
/// for every request that neither failed nor was cancelled, the longest prefix of its blocks whose
/// every expected layer stored (the cycle's last task, under the barrier's deadline). Thread-safe
/// as its parts are. The torch ops take it through a torch custom class that holds a weak
/// reference, claimed once from a TicketOffers ticket.
class WriterContext {
 public:
  /// A writer on `store`; INVALID_ARGUMENT naming the bad option (see validateEngineOptions), or
  /// `layers` when it is given but empty.
  static Result<std::shared_ptr<WriterContext>> create(std::shared_ptr<CacheStore> store, const EngineOptions& options,
                                                       LayerRange layers = {});
  ~WriterContext();
  WriterContext(const WriterContext&) = delete;
  WriterContext& operator=(const WriterContext&) = delete;

  /// The engine's pool, owned by the writer; thread-safe.
  AsyncWriter& pool() { return engine_->pool(); }
  /// The store, shared with the tasks; thread-safe.
  CacheStore& store() { return engine_->store(); }
  /// The staging pool, shared with the tasks; thread-safe.
  StagingPool& staging() { return engine_->staging(); }
  /// What write tasks share, shared with them; thread-safe as its parts are.
  const std::shared_ptr<WriteTarget>& target() const { return target_; }
  /// The key space, fixed at creation; safe to read from any thread.
  const KeySpace& keys() const { return target_->keys; }
  /// The layers a commit covers (empty: those written), fixed at creation; safe to read anywhere.
  const LayerRange& layers() const { return target_->layers; }

  /// Aborts the open cycle (see AsyncWriter::abort), so nothing it stored is published.
  Status abort(AbortReport* report, std::optional<std::chrono::nanoseconds> timeout);
  /// Closes the writer for good: aborts within `timeout`. The context stays valid but refuses work.
  void shutdown(std::optional<std::chrono::nanoseconds> timeout);

 private:
  WriterContext() = default;

  std::shared_ptr<WriteTarget> target_;
  std::unique_ptr<TransferEngine> engine_;
};

}  // namespace kvdump

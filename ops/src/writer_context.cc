#include "kvdump_ops/writer_context.h"

#include <set>
#include <unordered_set>

#include "kvdump/commit_record.h"

namespace kvdump {
namespace {

// Tells the store which blocks of a finished or aborted cycle will never be committed, so that it
// may reclaim them first. Blocks in `committed` were just published: the store keeps them anyway,
// so they are left out rather than named by the thousand.
void discardStored(const WriteTarget& target, const LedgerSnapshot& snapshot,
                   const std::unordered_set<uint64_t>& committed = {}) {
  std::vector<std::string> keys = storedKeys(snapshot, target.keys, committed);
  if (keys.empty()) return;
  try {
    target.store->discard(keys);
  } catch (...) {
    // A plug-in store's discard is advice: failing it leaves space unreclaimed, never data wrong.
  }
}

void discardStored(const WriteTarget& target, const std::vector<LedgerSnapshot>& snapshots) {
  for (const LedgerSnapshot& snapshot : snapshots) discardStored(target, snapshot);
}

// The cycle's last task: publish what the ledger says stored, for requests that neither failed nor
// were cancelled, then discard the rest. Runs on a worker under the barrier's deadline. Discarding
// comes strictly after publishing: before, a store could reclaim a block about to be committed. The
// ledger is read when the task runs, not when it is made: a task dropped by an abort leaves the
// cycle's records to the abort, which discards them.
ControlledTask commitFinisher(const std::shared_ptr<WriteTarget>& target, const CycleReport& outcome) {
  if (!target->ledger.recorded(outcome.cycle)) return nullptr;
  return [target, outcome](TaskControl& control) {
    std::vector<LedgerSnapshot> earlier;
    const LedgerSnapshot snapshot = target->ledger.take(outcome.cycle, &earlier);
    discardStored(*target, earlier);
    const LayerRange expected = target->layers.empty() ? observedLayers(snapshot) : target->layers;
    std::set<std::string> excluded = outcome.failed_requests;
    excluded.insert(outcome.cancelled_requests.begin(), outcome.cancelled_requests.end());
    if (outcome.empty_request_failed) excluded.insert("");
    const std::vector<uint64_t> hashes = publishableBlocks(snapshot, expected, excluded);
    if (hashes.empty()) {
      discardStored(*target, snapshot);
      return control.seal() ? Status::Ok() : Status::Cancelled("the cycle was aborted before its commit");
    }
    // publishCommits puts the last block's record first: that is the key a stalled call waits on.
    control.setActivity(commitKey(target->keys, hashes.back(), expected));
    std::vector<std::string> record_keys;
    record_keys.reserve(hashes.size());
    for (uint64_t h : hashes) record_keys.push_back(commitKey(target->keys, h, expected));
    if (!target->claims.claim(outcome.cycle, record_keys, control)) {
      // Given up by abort() while it discarded: a later cycle may already publish these keys.
      discardStored(*target, snapshot);
      return Status::Cancelled("the cycle was aborted before its commit");
    }
    struct Released {
      CommitClaims& claims;
      uint64_t cycle;
      const std::vector<std::string>& keys;
      ~Released() { claims.release(cycle, keys); }
    } released{target->claims, outcome.cycle, record_keys};
    Status published = publishCommits(*target->store, target->keys, hashes, expected);
    if (control.seal()) {
      // After a failed publish some records may be missing: discard everything, and let the store
      // keep what a commit record covers.
      discardStored(*target, snapshot,
                    published.ok() ? std::unordered_set<uint64_t>(hashes.begin(), hashes.end())
                                   : std::unordered_set<uint64_t>{});
      return published;
    }
    // The cycle was aborted while the records were in flight: an aborted cycle publishes nothing,
    // so take back whatever landed, except records a later cycle (a retry of the same request) has
    // set out to publish meanwhile under the same keys.
    (void)target->claims.retract(*target->store, outcome.cycle, record_keys);
    discardStored(*target, snapshot);
    return Status::Cancelled("the commit was abandoned by abort(); its records were retracted");
  };
}

}  // namespace

Result<std::shared_ptr<WriterContext>> WriterContext::create(std::shared_ptr<CacheStore> store,
                                                             const EngineOptions& options, LayerRange layers) {
  if (layers.empty() && !(layers.begin == 0 && layers.end == 0)) {
    return Status::InvalidArgument("layers must be a non-empty range [begin, end), got " + layers.toString());
  }
  std::shared_ptr<WriterContext> context(new WriterContext());
  context->target_ = std::make_shared<WriteTarget>();
  context->target_->layers = layers;
  std::weak_ptr<WriteTarget> weak = context->target_;
  auto finisher = [weak](const CycleReport& outcome) -> ControlledTask {
    auto target = weak.lock();
    return target ? commitFinisher(target, outcome) : nullptr;
  };
  auto engine = TransferEngine::create(context->target_, std::move(store), options, std::move(finisher));
  if (!engine.ok()) return engine.status();
  context->engine_ = std::move(engine).value();
  return context;
}

WriterContext::~WriterContext() {
  if (!engine_) return;
  if (engine_->pool().forkedAway()) {
    // A forked child's copy: the store and ledger may hold locks of the parent's threads.
    (void)engine_.release();  // NOLINT: left to the process's end on purpose
    return;
  }
  engine_.reset();  // aborts within abort_timeout; tasks left in abandoned calls keep the target alive
  discardStored(*target_, target_->ledger.drain());  // an open cycle's blocks will never be committed
}

Status WriterContext::abort(AbortReport* report, std::optional<std::chrono::nanoseconds> timeout) {
  AbortReport local;
  Status status = engine_->pool().abort(&local, timeout);
  // What the aborted cycle's finished tasks stored will never be committed; tasks it abandoned
  // record nothing and discard what they land themselves.
  if (status.ok()) discardStored(*target_, target_->ledger.drain(local.cycle));
  if (report) *report = std::move(local);
  return status;
}

void WriterContext::shutdown(std::optional<std::chrono::nanoseconds> timeout) {
  if (engine_->pool().forkedAway()) return;
  engine_->pool().close(timeout);
  discardStored(*target_, target_->ledger.drain());
}

}  // namespace kvdump

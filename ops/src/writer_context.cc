#include "kvdump_ops/writer_context.h"

#include <atomic>
#include <mutex>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "kvdump/commit_record.h"

namespace kvdump {
namespace {

// Contexts offered to the torch side and not yet claimed.
struct Offers {
  std::mutex mu;
  std::unordered_map<int64_t, std::weak_ptr<WriterContext>> pending;
  int64_t next_ticket = 1;
};

Offers& offers() {
  // Leaked on purpose: contexts may be destroyed during static destruction at interpreter exit.
  static Offers* o = new Offers();
  return *o;
}

// Registers every staging buffer with the store before it is used and unregisters it before it is
// freed, so a zero-copy store (Mooncake) can put from and get into it directly.
HostAllocator registeringAllocator(HostAllocator base, std::shared_ptr<CacheStore> store) {
  return [base = std::move(base), store = std::move(store)](size_t bytes) -> Result<HostAllocation> {
    Result<HostAllocation> memory = base(bytes);
    if (!memory.ok()) return memory;
    HostAllocation m = std::move(memory).value();
    Status registered = Status::Internal("registerBuffer threw");
    try {
      registered = store->registerBuffer(m.data, m.size);
    } catch (const std::exception& e) {
      registered = Status::IoError(std::string("registering a staging buffer failed: ") + e.what());
    }
    if (!registered.ok()) {
      if (m.release) m.release();
      return registered;
    }
    m.release = [store, data = m.data, release = std::move(m.release)] {
      (void)store->unregisterBuffer(data);  // freed either way; the store has nothing left to use
      if (release) release();
    };
    return m;
  };
}

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
    control.setActivity(commitKey(target->keys, hashes.front(), expected));
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
    // so take back whatever landed.
    (void)retractCommits(*target->store, target->keys, hashes, expected);
    discardStored(*target, snapshot);
    return Status::Cancelled("the commit was abandoned by abort(); its records were retracted");
  };
}

}  // namespace

WriterContext::WriterContext(std::shared_ptr<CacheStore> store, WriterContextOptions options)
    : options_(std::move(options)), target_(std::make_shared<WriteTarget>()) {
  target_->store = std::move(store);
  target_->staging = std::make_shared<StagingPool>(
      options_.staging_bytes,
      registeringAllocator(options_.staging_allocator ? options_.staging_allocator : pageableHostAllocator(),
                           target_->store));
  target_->keys = options_.keys;
  target_->key_space_fingerprint = keySpaceFingerprint(options_.keys);
  target_->staging_timeout = options_.staging_timeout;
  target_->layers = options_.layers;
  target_->loads = std::make_shared<CompletionBoard>();
  WriterOptions writer_options = options_.writer;
  std::weak_ptr<WriteTarget> weak = target_;
  writer_options.cycle_finisher = [weak](const CycleReport& outcome) -> ControlledTask {
    auto target = weak.lock();
    return target ? commitFinisher(target, outcome) : nullptr;
  };
  writer_ = std::make_unique<AsyncWriter>(std::move(writer_options));
}

WriterContext::~WriterContext() {
  writer_.reset();  // aborts within abort_timeout; tasks left in abandoned calls keep the target alive
  discardStored(*target_, target_->ledger.drain());  // an open cycle's blocks will never be committed
  target_->loads->close("the loader was closed");
}

Status WriterContext::init() { return writer_->init(); }

Status WriterContext::abort(AbortReport* report, std::optional<std::chrono::nanoseconds> timeout) {
  AbortReport local;
  Status status = writer_->abort(&local, timeout);
  // What the aborted cycle's finished tasks stored will never be committed; tasks it abandoned
  // record nothing and discard what they land themselves.
  if (status.ok()) discardStored(*target_, target_->ledger.drain(local.cycle));
  if (report) *report = std::move(local);
  target_->loads->cancelPending("the load was cancelled by abort()");
  return status;
}

void WriterContext::shutdown(std::optional<std::chrono::nanoseconds> timeout) {
  writer_->close(timeout);
  discardStored(*target_, target_->ledger.drain());
  target_->loads->close("the loader was closed");
}

std::shared_ptr<WriterContext> WriterContext::create(std::shared_ptr<CacheStore> store, WriterContextOptions options) {
  return std::make_shared<WriterContext>(std::move(store), std::move(options));
}

int64_t WriterContext::offer(const std::shared_ptr<WriterContext>& context) {
  std::lock_guard<std::mutex> lock(offers().mu);
  // Offers never claimed (their Python writer failed before claiming) are dropped once dead.
  for (auto it = offers().pending.begin(); it != offers().pending.end();) {
    it = it->second.expired() ? offers().pending.erase(it) : std::next(it);
  }
  const int64_t ticket = offers().next_ticket++;
  offers().pending.emplace(ticket, context);
  return ticket;
}

std::shared_ptr<WriterContext> WriterContext::claim(int64_t ticket) {
  std::lock_guard<std::mutex> lock(offers().mu);
  auto it = offers().pending.find(ticket);
  if (it == offers().pending.end()) return nullptr;
  std::shared_ptr<WriterContext> context = it->second.lock();
  offers().pending.erase(it);
  return context;
}

}  // namespace kvdump

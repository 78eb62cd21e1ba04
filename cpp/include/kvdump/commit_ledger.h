// CommitLedger: what each request of the open cycle actually stored, from which the barrier decides
// what to publish.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "kvdump/block_key.h"
#include "kvdump/status.h"

namespace kvdump {

/// The blocks one request wrote in a cycle: their hashes in the request's order, and for each the
/// layers whose put succeeded. A plain value.
struct RequestBlocks {
  std::vector<uint64_t> order;
  std::unordered_map<uint64_t, std::vector<bool>> stored_layers;
};

/// Everything a cycle recorded, by request id; a plain value.
using LedgerSnapshot = std::map<std::string, RequestBlocks>;

/// Records, as layer tasks finish, which (request, block, layer) stored in which cycle. Thread-safe;
/// owned by the writer's shared state so that tasks may record into it from any worker. Keyed by
/// cycle, so that a task of an aborted cycle finishing late can never add to a later cycle.
class CommitLedger {
 public:
  /// Notes blocks `hashes` of `request` in order, and marks `layer` stored for those whose result is OK.
  void record(uint64_t cycle, const std::string& request, uint32_t layer, const uint64_t* hashes,
              const Status* results, size_t n);
  /// Moves out what `cycle` recorded, and what earlier cycles left into `earlier` (dropped when null).
  LedgerSnapshot take(uint64_t cycle, std::vector<LedgerSnapshot>* earlier = nullptr);
  /// Whether `cycle` recorded anything yet.
  bool recorded(uint64_t cycle) const;
  /// Moves out what cycles up to `through` recorded (an aborted cycle's leftovers, to be
  /// discarded); a later cycle, opened meanwhile on another thread, keeps its records.
  std::vector<LedgerSnapshot> drain(uint64_t through = UINT64_MAX);

 private:
  mutable std::mutex mu_;
  std::map<uint64_t, LedgerSnapshot> cycles_;
};

/// [0, highest layer recorded + 1); empty when nothing was recorded. Pure.
LayerRange observedLayers(const LedgerSnapshot& snapshot);

/// The store key of every (block, layer) the snapshot says stored, except blocks in `skip`. Pure.
std::vector<std::string> storedKeys(const LedgerSnapshot& snapshot, const KeySpace& space,
                                    const std::unordered_set<uint64_t>& skip = {});

/// For each request not in `excluded`, the longest prefix of its blocks whose every layer of
/// `expected` stored; never a block after a gap. The union over requests, in first-seen order,
/// without duplicates. Pure.
std::vector<uint64_t> publishableBlocks(const LedgerSnapshot& snapshot, LayerRange expected,
                                        const std::set<std::string>& excluded);

}  // namespace kvdump

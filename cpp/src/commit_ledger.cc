#include "kvdump/commit_ledger.h"

#include <algorithm>
#include <iterator>
#include <unordered_set>
#include <utility>

namespace kvdump {

void CommitLedger::record(uint64_t cycle, const std::string& request, uint32_t layer, const uint64_t* hashes,
                          const Status* results, size_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  RequestBlocks& blocks = cycles_[cycle][request];
  for (size_t i = 0; i < n; ++i) {
    auto [it, inserted] = blocks.stored_layers.try_emplace(hashes[i]);
    if (inserted) blocks.order.push_back(hashes[i]);
    if (!results[i].ok()) continue;
    std::vector<bool>& layers = it->second;
    if (layers.size() <= layer) layers.resize(layer + 1, false);
    layers[layer] = true;
  }
}

LedgerSnapshot CommitLedger::take(uint64_t cycle, std::vector<LedgerSnapshot>* earlier) {
  LedgerSnapshot out;
  std::map<uint64_t, LedgerSnapshot> dropped;  // freed outside the lock
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cycles_.find(cycle);
    if (it != cycles_.end()) out = std::move(it->second);
    auto end = cycles_.lower_bound(cycle);
    dropped.insert(std::make_move_iterator(cycles_.begin()), std::make_move_iterator(end));
    cycles_.erase(cycles_.begin(), cycles_.upper_bound(cycle));
  }
  if (earlier != nullptr) {
    for (auto& [c, snapshot] : dropped) earlier->push_back(std::move(snapshot));
  }
  return out;
}

bool CommitLedger::recorded(uint64_t cycle) const {
  std::lock_guard<std::mutex> lock(mu_);
  return cycles_.count(cycle) > 0;
}

std::vector<LedgerSnapshot> CommitLedger::drain(uint64_t through) {
  std::map<uint64_t, LedgerSnapshot> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto end = cycles_.upper_bound(through);
    all.insert(std::make_move_iterator(cycles_.begin()), std::make_move_iterator(end));
    cycles_.erase(cycles_.begin(), end);
  }
  std::vector<LedgerSnapshot> out;
  out.reserve(all.size());
  for (auto& [cycle, snapshot] : all) out.push_back(std::move(snapshot));
  return out;
}

LayerRange observedLayers(const LedgerSnapshot& snapshot) {
  uint32_t end = 0;
  for (const auto& [request, blocks] : snapshot) {
    for (const auto& [hash, layers] : blocks.stored_layers) {
      // The vector grows to the highest layer stored; a failed layer alone does not extend it.
      auto last = std::find(layers.rbegin(), layers.rend(), true);
      if (last != layers.rend()) end = std::max<uint32_t>(end, static_cast<uint32_t>(layers.rend() - last));
    }
  }
  return LayerRange{0, end};
}

std::vector<uint64_t> publishableBlocks(const LedgerSnapshot& snapshot, LayerRange expected,
                                        const std::set<std::string>& excluded) {
  std::vector<uint64_t> out;
  if (expected.empty()) return out;
  std::unordered_set<uint64_t> seen;
  for (const auto& [request, blocks] : snapshot) {
    if (excluded.count(request) != 0) continue;
    for (uint64_t hash : blocks.order) {
      const std::vector<bool>& layers = blocks.stored_layers.at(hash);
      bool complete = layers.size() >= expected.end;
      for (uint32_t l = expected.begin; complete && l < expected.end; ++l) complete = layers[l];
      if (!complete) break;  // a prefix is only useful whole: nothing after a gap
      if (seen.insert(hash).second) out.push_back(hash);
    }
  }
  return out;
}

std::vector<std::string> storedKeys(const LedgerSnapshot& snapshot, const KeySpace& space,
                                    const std::unordered_set<uint64_t>& skip) {
  std::vector<std::string> keys;
  for (const auto& [request, blocks] : snapshot) {
    for (const auto& [hash, layers] : blocks.stored_layers) {
      if (skip.count(hash) > 0) continue;
      for (size_t layer = 0; layer < layers.size(); ++layer) {
        if (layers[layer]) keys.push_back(blockKey(space, hash, static_cast<int64_t>(layer)));
      }
    }
  }
  return keys;
}

}  // namespace kvdump

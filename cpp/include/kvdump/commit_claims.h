// Which cycle of one writer last set out to publish each commit record, so that a commit abandoned
// by abort() takes back only what no later cycle has published under the same keys since.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kvdump/cache_store.h"
#include "kvdump/status.h"

namespace kvdump {

/// Owner of each commit record key that a cycle of one writer is publishing, kept while any claim
/// is open. Records are content-addressed, so a retry of an aborted request writes the very keys
/// its abandoned commit may still be putting. Thread-safe.
class CommitClaims {
 public:
  /// Marks `keys` as published by `cycle`, before the put that publishes them; pair with release().
  void claim(uint64_t cycle, const std::vector<std::string>& keys);

  /// Removes from `store` each of `keys` that `cycle` still owns: those no later claim took. The
  /// claims stay locked while it removes, so a later claim and its put cannot fall between the
  /// check and the remove. Absent keys are fine; returns the first other failure.
  Status retract(CacheStore& store, uint64_t cycle, const std::vector<std::string>& keys);

  /// Ends one claim(); when none is open, every owner is forgotten.
  void release();

  /// Keys with an owner now (for tests and stats).
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, uint64_t> owner_;
  size_t open_ = 0;
};

}  // namespace kvdump

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
#include "kvdump/task_control.h"

namespace kvdump {

/// Owner of each commit record key that a cycle of one writer is publishing, from its claim until
/// its release. Records are content-addressed, so a retry of an aborted request writes the very
/// keys its abandoned commit may still be putting. Holds only keys of commits in flight.
/// Thread-safe.
class CommitClaims {
 public:
  /// Marks `keys` as published by `cycle`, before the put that publishes them, unless `control`'s
  /// task was already abandoned (then nothing is claimed and the result is false): a later cycle
  /// claims only after abort() gave the earlier one up, so a stale claim can never take its keys.
  bool claim(uint64_t cycle, const std::vector<std::string>& keys, const TaskControl& control);

  /// Removes from `store` each of `keys` that `cycle` still owns: those no later claim took. The
  /// claims stay locked while it removes, so a later claim and its put cannot fall between the
  /// check and the remove; a remove that stalls holds later commits of this writer back with it.
  /// Only worker threads without the GIL take this lock. Absent keys are fine; returns the first
  /// other failure.
  Status retract(CacheStore& store, uint64_t cycle, const std::vector<std::string>& keys);

  /// Ends `cycle`'s claim on `keys`: the keys it still owns are forgotten.
  void release(uint64_t cycle, const std::vector<std::string>& keys);

  /// Keys with an owner now (for tests and stats).
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, uint64_t> owner_;
};

}  // namespace kvdump

// CompletionBoard: lets a thread wait for one numbered piece of work (e.g. one layer's load).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "kvdump/status.h"

namespace kvdump {

/// Tracks pending/completed ids and their outcome. All methods are thread-safe; share it (e.g. by
/// shared_ptr) with every waiter so that closing it never frees memory a waiter still uses.
class CompletionBoard {
 public:
  /// Marks `id` pending, forgetting an earlier outcome for it.
  void expect(int64_t id);
  /// Records the outcome of `id` and wakes its waiters.
  void complete(int64_t id, Status status);
  /// Waits for `id`'s outcome and returns it. NOT_FOUND if `id` was never expected; TIMEOUT when the
  /// deadline passes first.
  Status wait(int64_t id, std::optional<std::chrono::nanoseconds> timeout);
  /// Whether `id` was ever expected (and not forgotten since).
  bool expected(int64_t id) const;
  /// Marks every pending id CANCELLED (used when the work behind them is aborted).
  void cancelPending(const std::string& why);
  /// Ends the board: every waiter, present and future, gets LIFECYCLE with `why`; later
  /// completions are ignored. Idempotent.
  void close(const std::string& why);

 private:
  struct Entry {
    bool done = false;
    Status status;
  };
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<int64_t, Entry> entries_;
  std::optional<std::string> closed_;
};

}  // namespace kvdump

// Blocking waits that Ctrl-C can still interrupt: a wait with the GIL released never runs Python's
// signal handlers, so it is cut into slices with a look at pending signals between them.
#pragma once

#include <algorithm>
#include <chrono>
#include <optional>

#include "kvdump/status.h"
#include "kvdump_ops/python_signals.h"

namespace kvdump::python {

/// How long a wait goes without looking at pending signals.
inline constexpr std::chrono::milliseconds kSignalCheckInterval{100};

/// Calls `wait(slice)` until it returns anything but TIMEOUT or `timeout` (none: no deadline) has
/// passed, looking at pending signals between slices. Call without the GIL. A handler that raised
/// (KeyboardInterrupt) ends the wait with CANCELLED and its exception set: the caller rethrows it.
/// `wait` must have no effect when it times out.
template <typename Wait>
Status waitInterruptibly(std::optional<std::chrono::nanoseconds> timeout, Wait&& wait) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = timeout ? Clock::now() + *timeout : Clock::time_point::max();
  for (;;) {
    const bool bounded = deadline != Clock::time_point::max();
    const auto left = bounded ? std::max(std::chrono::nanoseconds(0), std::chrono::nanoseconds(deadline - Clock::now()))
                              : std::chrono::nanoseconds(kSignalCheckInterval);
    const bool last = bounded && left <= kSignalCheckInterval;
    Status status = wait(last ? left : std::chrono::nanoseconds(kSignalCheckInterval));
    if (status.code() != StatusCode::kTimeout || last) return status;
    if (pythonSignalRaised()) return Status::Cancelled("interrupted by a signal");
  }
}

}  // namespace kvdump::python

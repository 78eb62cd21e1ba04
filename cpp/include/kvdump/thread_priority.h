// Worker threads that yield the cores to the forward: a lower scheduling priority for the calling
// thread, where the platform has one.
#pragma once

#include "kvdump/status.h"

namespace kvdump {

/// Moves the calling thread to the batch scheduling class and raises its nice value by
/// `nice_increment` (1..19), so that the kernel prefers the forward's threads whenever both want a
/// core. Only the calling thread changes. UNSUPPORTED where the platform lacks per-thread
/// priorities (not Linux); IO_ERROR naming the call that failed. Thread-safe.
Status lowerCurrentThreadPriority(int nice_increment);

}  // namespace kvdump

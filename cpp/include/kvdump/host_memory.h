// Host memory handed out by an allocator that may pin it for a device: what the staging pool and
// the memory store's arena are made of.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "kvdump/status.h"

namespace kvdump {

/// Host memory owned by whoever holds it; `release` returns it to the system (free, or the device's
/// pinned allocator). Move-only in practice: release it exactly once.
struct HostAllocation {
  uint8_t* data = nullptr;
  size_t size = 0;
  std::function<void()> release;
};

/// Allocates `bytes` of host memory (pinned where the device supports it), or says why it could not.
/// May be slow (pinning, registering with a transport): never call it under a hot lock.
using HostAllocator = std::function<Result<HostAllocation>(size_t bytes)>;

/// 64-byte aligned pageable memory from the C heap: the allocator for CPU-only use and for tests.
HostAllocator pageableHostAllocator();

}  // namespace kvdump

// Host staging memory for a device type, declared torch-free so the binding layer can ask for it.
#pragma once

#include <string>

#include "kvdump/staging_pool.h"

namespace kvdump {

/// Pinned host memory from torch's host allocator for `device_type` ("cuda", "npu", ...), which the
/// device can DMA from; pageable memory for "cpu". INVALID_ARGUMENT naming `argument` for a
/// type that is unknown, not an accelerator, or has no device in this process. Thread-safe.
Result<HostAllocator> hostAllocatorFor(const std::string& device_type, const char* argument = "staging_device");

/// The pinned host allocator of this process's accelerator when it has one with a device, else an
/// empty allocator (meaning: pageable memory). Thread-safe.
HostAllocator acceleratorHostAllocator();

}  // namespace kvdump

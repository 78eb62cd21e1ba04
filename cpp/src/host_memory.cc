#include "kvdump/host_memory.h"

#include <algorithm>
#include <cstdlib>
#include <string>

namespace kvdump {

HostAllocator pageableHostAllocator() {
  return [](size_t bytes) -> Result<HostAllocation> {
    const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, rounded));
    if (p == nullptr) return Status::IoError("out of host memory allocating " + std::to_string(bytes) + " bytes");
    return HostAllocation{p, bytes, [p] { std::free(p); }};
  };
}

}  // namespace kvdump

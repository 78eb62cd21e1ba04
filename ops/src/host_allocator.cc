#include "kvdump_ops/host_allocator.h"

#include <ATen/core/CachingHostAllocator.h>
#include <c10/core/DeviceType.h>

#include <memory>
#include <stdexcept>

namespace kvdump {

HostAllocator hostAllocatorFor(const std::string& device_type) {
  const c10::DeviceType type = c10::Device(device_type).type();
  if (type == c10::DeviceType::CPU) return pageableHostAllocator();
  return [type](size_t bytes) -> Result<HostAllocation> {
    try {
      at::HostAllocator* allocator = at::getHostAllocator(type);
      auto data_ptr = std::make_shared<c10::DataPtr>(allocator->allocate(bytes));
      auto* data = static_cast<uint8_t*>(data_ptr->get());
      if (data == nullptr) return Status::IoError("pinned host allocator returned no memory");
      return HostAllocation{data, bytes, [data_ptr]() mutable { data_ptr.reset(); }};
    } catch (const std::exception& e) {
      // Runs on a worker thread inside a task: an escaping exception would go unrecorded.
      return Status::IoError(std::string("pinned host allocation of ") + std::to_string(bytes) +
                             " bytes failed: " + e.what());
    }
  };
}

}  // namespace kvdump

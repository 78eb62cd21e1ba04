#include "kvdump_ops/host_allocator.h"

#include <ATen/core/CachingHostAllocator.h>
#include <ATen/DeviceAccelerator.h>
#include <c10/core/DeviceType.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <memory>
#include <stdexcept>

namespace kvdump {

Result<HostAllocator> hostAllocatorFor(const std::string& device_type, const char* argument) {
  auto refuse = [&](const std::string& why) {
    return Status::InvalidArgument(std::string(argument) + " '" + device_type + "' " + why +
                                   "; use 'cpu' or the accelerator this process has");
  };
  c10::DeviceType type;
  try {
    type = c10::Device(device_type).type();
  } catch (const std::exception&) {
    return refuse("is not a device type");
  }
  if (type == c10::DeviceType::CPU) return pageableHostAllocator();
  // Asking a missing backend for its host allocator crashes later, on a worker: check up front.
  const std::optional<c10::DeviceType> accelerator = at::getAccelerator(/*checked=*/false);
  if (!accelerator || *accelerator != type) return refuse("is not this process's accelerator");
  try {
    if (c10::impl::VirtualGuardImpl(type).deviceCount() < 1) return refuse("has no device available");
  } catch (const std::exception& e) {
    return refuse(std::string("is not usable: ") + e.what());
  }
  return HostAllocator([type](size_t bytes) -> Result<HostAllocation> {
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
  });
}

HostAllocator acceleratorHostAllocator() {
  const std::optional<c10::DeviceType> accelerator = at::getAccelerator(/*checked=*/false);
  if (!accelerator) return HostAllocator();
  Result<HostAllocator> pinned = hostAllocatorFor(c10::DeviceTypeName(*accelerator, /*lower_case=*/true));
  return pinned.ok() ? pinned.value() : HostAllocator();
}

}  // namespace kvdump

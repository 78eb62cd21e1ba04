#include "kvdump_ops/transfer_engine.h"

#include <ATen/Parallel.h>
#include <sched.h>

#include <algorithm>
#include <thread>

#include "kvdump_ops/host_allocator.h"

namespace kvdump {
namespace {

// Registers every staging buffer with the store before it is used and unregisters it before it is
// freed, so a zero-copy store (Mooncake) can put from and get into it directly.
HostAllocator registeringAllocator(HostAllocator base, std::shared_ptr<CacheStore> store) {
  return [base = std::move(base), store = std::move(store)](size_t bytes) -> Result<HostAllocation> {
    Result<HostAllocation> memory = base(bytes);
    if (!memory.ok()) return memory;
    HostAllocation m = std::move(memory).value();
    Status registered = Status::Internal("registerBuffer threw");
    try {
      registered = store->registerBuffer(m.data, m.size);
    } catch (const std::exception& e) {
      registered = Status::IoError(std::string("registering a staging buffer failed: ") + e.what());
    }
    if (!registered.ok()) {
      if (m.release) m.release();
      return registered;
    }
    m.release = [store, data = m.data, release = std::move(m.release)] {
      (void)store->unregisterBuffer(data);  // freed either way; the store has nothing left to use
      if (release) release();
    };
    return m;
  };
}

Result<HostAllocator> stagingAllocator(const std::string& device) {
  if (device == "auto") {
    HostAllocator pinned = acceleratorHostAllocator();
    return pinned ? pinned : pageableHostAllocator();
  }
  return hostAllocatorFor(device, "staging_device");
}

size_t usableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return static_cast<size_t>(std::max(1, CPU_COUNT(&set)));
  return std::max(1u, std::thread::hardware_concurrency());
}

// The cores this process may run on that torch's intra-op threads leave free (0 when they take every one).
size_t coresTorchLeavesFree() {
  const size_t cores = usableCores();
  const size_t forward = static_cast<size_t>(std::max(1, at::get_num_threads()));
  return cores > forward ? cores - forward : 0;
}

}  // namespace

size_t defaultEngineThreads() { return std::clamp<size_t>(coresTorchLeavesFree(), 1, 8); }

std::chrono::microseconds defaultEngineIdlePoll() {
  return coresTorchLeavesFree() > 0 ? std::chrono::microseconds(500) : std::chrono::microseconds(0);
}

Status validateEngineOptions(const EngineOptions& options) {
  Status pool = validateWriterOptions(options.pool);
  if (!pool.ok()) return pool;
  if (options.staging_bytes == 0) return Status::InvalidArgument("staging_bytes must be at least 1");
  if (options.staging_timeout.count() < 0) return Status::InvalidArgument("staging_timeout must not be negative");
  return validateKeySpace(options.keys);
}

Result<std::unique_ptr<TransferEngine>> TransferEngine::create(
    std::shared_ptr<TransferTarget> target, std::shared_ptr<CacheStore> store, const EngineOptions& options,
    std::function<ControlledTask(const CycleReport&)> cycle_finisher) {
  if (!store) return Status::InvalidArgument("store must not be None");
  Status valid = validateEngineOptions(options);
  if (!valid.ok()) return valid;
  Result<HostAllocator> allocator = stagingAllocator(options.staging_device);
  if (!allocator.ok()) return allocator.status();
  target->store = std::move(store);
  target->staging = std::make_shared<StagingPool>(options.staging_bytes,
                                                  registeringAllocator(std::move(allocator).value(), target->store));
  target->keys = options.keys;
  target->key_space_fingerprint = keySpaceFingerprint(options.keys);
  target->staging_timeout = options.staging_timeout;
  WriterOptions pool = options.pool;
  if (pool.num_threads == 0) pool.num_threads = defaultEngineThreads();
  if (!pool.idle_poll) pool.idle_poll = defaultEngineIdlePoll();
  pool.cycle_finisher = std::move(cycle_finisher);
  return std::unique_ptr<TransferEngine>(new TransferEngine(std::move(target), std::make_unique<AsyncWriter>(pool)));
}

}  // namespace kvdump

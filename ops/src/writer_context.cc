#include "kvdump_ops/writer_context.h"

#include <atomic>
#include <mutex>
#include <unordered_map>

namespace kvdump {
namespace {

struct Registry {
  std::mutex mu;
  std::unordered_map<int64_t, std::weak_ptr<WriterContext>> contexts;
  int64_t next_handle = 1;
};

Registry& registry() {
  // Leaked on purpose: contexts may be destroyed during static destruction at interpreter exit.
  static Registry* r = new Registry();
  return *r;
}

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

}  // namespace

WriterContext::WriterContext(std::shared_ptr<CacheStore> store, WriterContextOptions options)
    : options_(std::move(options)),
      store_(std::move(store)),
      staging_(std::make_unique<StagingPool>(
          options_.staging_bytes,
          registeringAllocator(options_.staging_allocator ? options_.staging_allocator : pageableHostAllocator(),
                               store_))),
      writer_(std::make_unique<AsyncWriter>(options_.writer)) {}

WriterContext::~WriterContext() {
  if (handle_ != 0) {
    std::lock_guard<std::mutex> lock(registry().mu);
    registry().contexts.erase(handle_);
  }
  writer_.reset();  // joins the workers before the staging pool and the store go away
}

std::shared_ptr<WriterContext> WriterContext::create(std::shared_ptr<CacheStore> store, WriterContextOptions options) {
  auto ctx = std::make_shared<WriterContext>(std::move(store), std::move(options));
  std::lock_guard<std::mutex> lock(registry().mu);
  ctx->handle_ = registry().next_handle++;
  registry().contexts[ctx->handle_] = ctx;
  return ctx;
}

std::shared_ptr<WriterContext> WriterContext::lookup(int64_t handle) {
  std::lock_guard<std::mutex> lock(registry().mu);
  auto it = registry().contexts.find(handle);
  return it == registry().contexts.end() ? nullptr : it->second.lock();
}

}  // namespace kvdump

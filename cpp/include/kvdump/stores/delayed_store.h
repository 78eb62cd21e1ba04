// DelayedStore: wraps a store and adds a fixed latency per call, to model a remote store on one box.
#pragma once

#include <chrono>
#include <memory>

#include "kvdump/cache_store.h"

namespace kvdump {

/// Forwards to `inner` and sleeps `put_delay` per put/batchPut call (after handing the bytes over, as
/// a network store sends and then waits for the acknowledgment) and `get_delay` per
/// get/getInto/batchGetInto call (before the copy, as the reply arrives). A batch costs one delay,
/// as one round trip would. It never lends memory, as a remote store would not. Thread-safe as
/// `inner` is; shares ownership of it. Used by benchmarks and tests to stand in for network stores.
class DelayedStore final : public CacheStore {
 public:
  DelayedStore(std::shared_ptr<CacheStore> inner, std::chrono::nanoseconds put_delay, std::chrono::nanoseconds get_delay);

  std::string name() const override;
  Status put(std::string_view key, ByteView value) override;
  Result<std::vector<uint8_t>> get(std::string_view key) override;
  Result<size_t> getInto(std::string_view key, MutableByteView dst) override;
  Result<bool> exists(std::string_view key) override;
  Status remove(std::string_view key) override;
  std::vector<Status> batchPut(const std::vector<std::string>& keys, const std::vector<ByteView>& values) override;
  std::vector<Result<size_t>> batchGetInto(const std::vector<std::string>& keys,
                                           const std::vector<MutableByteView>& dsts) override;
  /// Forwarded without delay, so the inner store still reclaims what a failed cycle left.
  void discard(const std::vector<std::string>& keys) override { inner_->discard(keys); }

 private:
  std::shared_ptr<CacheStore> inner_;
  const std::chrono::nanoseconds put_delay_;
  const std::chrono::nanoseconds get_delay_;
};

}  // namespace kvdump

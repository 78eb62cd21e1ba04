#include "kvdump/stores/delayed_store.h"

#include <thread>

namespace kvdump {

DelayedStore::DelayedStore(std::shared_ptr<CacheStore> inner, std::chrono::nanoseconds put_delay,
                           std::chrono::nanoseconds get_delay)
    : inner_(std::move(inner)), put_delay_(put_delay), get_delay_(get_delay) {}

std::string DelayedStore::name() const { return "delayed(" + inner_->name() + ")"; }

// A put hands its bytes over first and then waits, as a network store sends a value and then waits
// for the acknowledgment; a get waits for the reply and then copies.
Status DelayedStore::put(std::string_view key, ByteView value) {
  Status status = inner_->put(key, value);
  std::this_thread::sleep_for(put_delay_);
  return status;
}

Result<std::vector<uint8_t>> DelayedStore::get(std::string_view key) {
  std::this_thread::sleep_for(get_delay_);
  return inner_->get(key);
}

Result<size_t> DelayedStore::getInto(std::string_view key, MutableByteView dst) {
  std::this_thread::sleep_for(get_delay_);
  return inner_->getInto(key, dst);
}

Result<bool> DelayedStore::exists(std::string_view key) { return inner_->exists(key); }

Status DelayedStore::remove(std::string_view key) { return inner_->remove(key); }

std::vector<Status> DelayedStore::batchPut(const std::vector<std::string>& keys, const std::vector<ByteView>& values) {
  std::vector<Status> statuses = inner_->batchPut(keys, values);
  std::this_thread::sleep_for(put_delay_);
  return statuses;
}

std::vector<Result<size_t>> DelayedStore::batchGetInto(const std::vector<std::string>& keys,
                                                       const std::vector<MutableByteView>& dsts) {
  std::this_thread::sleep_for(get_delay_);
  return inner_->batchGetInto(keys, dsts);
}

}  // namespace kvdump

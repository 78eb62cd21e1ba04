#include "kvdump/cache_store.h"

#include <cstring>

namespace kvdump {

Status bufferTooSmall(std::string_view key, size_t needed, size_t available) {
  return Status::TooLarge("value of " + std::to_string(needed) + " bytes does not fit a " + std::to_string(available) +
                          "-byte buffer")
      .withKey(std::string(key));
}

Result<size_t> CacheStore::getInto(std::string_view key, MutableByteView dst) {
  auto value = get(key);
  if (!value.ok()) return value.status();
  const auto& bytes = value.value();
  if (bytes.size() > dst.size) return bufferTooSmall(key, bytes.size(), dst.size);
  if (!bytes.empty()) std::memcpy(dst.data, bytes.data(), bytes.size());
  return bytes.size();
}

std::vector<Status> CacheStore::batchPut(const std::vector<std::string>& keys, const std::vector<ByteView>& values) {
  std::vector<Status> out;
  if (keys.size() != values.size()) {
    out.assign(keys.size(), Status::InvalidArgument("batchPut: keys and values differ in length"));
    return out;
  }
  out.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) out.push_back(put(keys[i], values[i]));
  return out;
}

std::vector<Result<size_t>> CacheStore::batchGetInto(const std::vector<std::string>& keys,
                                                     const std::vector<MutableByteView>& dsts) {
  std::vector<Result<size_t>> out;
  out.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i >= dsts.size()) {
      out.emplace_back(Status::InvalidArgument("batchGetInto: fewer buffers than keys").withKey(keys[i]));
    } else {
      out.push_back(getInto(keys[i], dsts[i]));
    }
  }
  return out;
}

std::vector<Result<bool>> CacheStore::batchExists(const std::vector<std::string>& keys) {
  std::vector<Result<bool>> out;
  out.reserve(keys.size());
  for (const auto& k : keys) out.push_back(exists(k));
  return out;
}

std::vector<Result<LentSlot>> CacheStore::lendSlots(const std::vector<std::string>& keys, size_t) {
  std::vector<Result<LentSlot>> out;
  out.reserve(keys.size());
  for (const auto& key : keys) {
    out.emplace_back(Status::Unsupported("store '" + name() + "' does not lend memory").withKey(key));
  }
  return out;
}

std::vector<Status> CacheStore::publishSlots(const std::vector<LentSlot>& slots) {
  return std::vector<Status>(slots.size(), Status::Unsupported("store '" + name() + "' does not lend memory"));
}

void CacheStore::abandonSlots(const std::vector<LentSlot>&) {}

Status CacheStore::readLeased(std::string_view key, const std::function<Status(ByteView)>& reader) {
  auto value = get(key);
  if (!value.ok()) return value.status();
  return reader(ByteView{value.value().data(), value.value().size()});
}

void CacheStore::discard(const std::vector<std::string>&) {}

Status CacheStore::registerBuffer(uint8_t*, size_t) { return Status::Ok(); }

Status CacheStore::unregisterBuffer(uint8_t*) { return Status::Ok(); }

}  // namespace kvdump

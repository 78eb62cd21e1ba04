#include "kvdump/commit_claims.h"

namespace kvdump {

bool CommitClaims::claim(uint64_t cycle, const std::vector<std::string>& keys, const TaskControl& control) {
  std::lock_guard<std::mutex> lock(mu_);
  if (control.abandoned()) return false;
  for (const std::string& key : keys) owner_[key] = cycle;
  return true;
}

Status CommitClaims::retract(CacheStore& store, uint64_t cycle, const std::vector<std::string>& keys) {
  // Held across the store calls: a retraction follows only a commit that abort() abandoned, and a
  // later cycle's claim must wait for it rather than have its fresh record removed.
  std::lock_guard<std::mutex> lock(mu_);
  Status first;
  for (const std::string& key : keys) {
    auto owned = owner_.find(key);
    if (owned == owner_.end() || owned->second != cycle) continue;
    Status removed;
    try {
      removed = store.remove(key);
    } catch (const std::exception& e) {
      removed = Status::IoError(std::string("remove threw: ") + e.what()).withKey(key);
    }
    if (!removed.ok() && removed.code() != StatusCode::kNotFound && first.ok()) first = removed;
  }
  return first;
}

void CommitClaims::release(uint64_t cycle, const std::vector<std::string>& keys) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& key : keys) {
    auto owned = owner_.find(key);
    if (owned != owner_.end() && owned->second == cycle) owner_.erase(owned);
  }
}

size_t CommitClaims::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return owner_.size();
}

}  // namespace kvdump

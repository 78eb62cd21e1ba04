#include "chunked_staging.h"

#include <algorithm>
#include <memory>
#include <string>

namespace kvdump {

Result<size_t> blocksPerChunk(const TransferTarget& target, size_t record_bytes, size_t total) {
  const size_t capacity = target.staging->capacityBytes();
  if (record_bytes > capacity) {
    return Status::TooLarge("one KV block record is " + std::to_string(record_bytes) +
                            " bytes, larger than the whole staging pool (" + std::to_string(capacity) + ")");
  }
  return std::min(total, capacity / record_bytes);
}

Result<StagingLease> leaseStaging(const TransferTarget& target, size_t bytes, TaskControl& control) {
  std::weak_ptr<StagingPool> pool = target.staging;
  control.setWake([pool] {
    if (auto p = pool.lock()) p->wakeWaiters();
  });
  auto lease = target.staging->lease(bytes, target.staging_timeout, [&control] { return control.abandoned(); });
  control.setWake(nullptr);
  return lease;
}

Status abandonedBeforeTouching() {
  return Status::Timeout("the task was abandoned by a deadline before it touched the caller's blocks");
}

}  // namespace kvdump

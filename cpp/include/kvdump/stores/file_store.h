// FileStore: values as files under a root directory on a local or shared filesystem.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "kvdump/cache_store.h"

namespace kvdump {

/// Options of a FileStore; a plain value.
struct FileStoreOptions {
  bool fsync = false;  // fsync each file (and its directory) before the rename that publishes it
  /// A temporary whose writer cannot be probed (another host, or the old naming) is taken for an
  /// orphan only once unmodified this long, since nothing else tells it from a slow live writer's;
  /// zero or less never removes such temporaries.
  std::chrono::seconds stale_temp_age{3600};
  /// Sweeping walks the whole root, which costs a directory listing per fan-out directory; roots
  /// with millions of values may turn this off and call removeOrphanTemporaries() themselves.
  bool remove_orphans_on_open = true;
};

/// Who created a FileStore temporary, as recorded in its name; a plain value, copyable.
struct TemporaryOwner {
  std::string host;     // sanitised host name; for operators only, liveness never depends on it
  std::string node;     // boot id and PID namespace: PIDs compare only within one node; empty if unknown
  int64_t pid = 0;      // the writer's PID in that namespace
  uint64_t start = 0;   // /proc/<pid>/stat start time (clock ticks after boot), guards PID reuse; 0 if unknown
};

/// One file per key at <root>/<2 hex>/<2 hex>/<escaped key>, the hex from a hash of the key so no
/// directory grows huge. A put writes a temporary file named after its writer and renames it over
/// the final name, so readers (in any process) see the old value or the new one, never a partial
/// file; several processes, on several hosts, may write and read one root. A writer killed between
/// the two leaves its temporary behind, which removeOrphanTemporaries() deletes once the writer is
/// provably dead. Thread-safe; stateless apart from the root path and options.
class FileStore final : public CacheStore {
 public:
  /// Creates `root` if needed and, unless disabled, removes orphan temporaries (best effort: a
  /// failed sweep does not fail the open); IO_ERROR if the root cannot be created or is not a directory.
  static Result<std::shared_ptr<FileStore>> open(const std::string& root, FileStoreOptions options = {});

  /// CacheStore's contract (thread-safe; values are copied in and out); a put publishes by rename.
  std::string name() const override { return "file://" + root_; }
  Status put(std::string_view key, ByteView value) override;
  Result<std::vector<uint8_t>> get(std::string_view key) override;
  Result<size_t> getInto(std::string_view key, MutableByteView dst) override;
  Result<bool> exists(std::string_view key) override;
  Status remove(std::string_view key) override;

  /// Deletes temporaries whose writer is dead (same node and PID gone or reused) or, when the writer
  /// cannot be probed, older than stale_temp_age; returns how many this call deleted. Safe while other
  /// processes write and sweep the same root (a file that vanishes meanwhile is skipped); thread-safe.
  /// Keeps sweeping past an unreadable directory and then reports the first such error as IO_ERROR.
  Result<size_t> removeOrphanTemporaries();

  /// The root directory without a trailing slash; owned by the store, valid while it lives.
  const std::string& root() const { return root_; }

  /// The calling process as a temporary's owner; computed once per process (again after fork), thread-safe.
  static TemporaryOwner currentTemporaryOwner();
  /// The file name (no directory) a temporary of `owner` gets; `serial` makes it unique within the
  /// process. It contains '~', which escaped keys never do, so no value can be taken for a temporary.
  static std::string temporaryName(const TemporaryOwner& owner, uint64_t serial);

  /// Uses `root` as is (no creation, no sweep); prefer open(). The store keeps its own copy of both.
  FileStore(std::string root, FileStoreOptions options) : root_(std::move(root)), options_(options) {}

 private:
  Result<std::string> pathFor(std::string_view key) const;

  const std::string root_;
  const FileStoreOptions options_;
};

}  // namespace kvdump

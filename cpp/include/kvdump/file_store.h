// FileStore: values as files under a root directory on a local or shared filesystem.
#pragma once

#include <atomic>
#include <string>

#include "kvdump/cache_store.h"

namespace kvdump {

/// Options of a FileStore; a plain value.
struct FileStoreOptions {
  bool fsync = false;  // fsync each file (and its directory) before the rename that publishes it
};

/// One file per key at <root>/<2 hex>/<2 hex>/<escaped key>, the hex from a hash of the key so no
/// directory grows huge. A put writes a uniquely named temporary file and renames it over the final
/// name, so readers (in any process) see the old value or the new one, never a partial file; several
/// processes may write and read one root. Thread-safe; stateless apart from the root path.
class FileStore final : public CacheStore {
 public:
  /// Creates `root` if needed; IO_ERROR if it cannot be created or is not a directory.
  static Result<std::shared_ptr<FileStore>> open(const std::string& root, FileStoreOptions options = {});

  std::string name() const override { return "file://" + root_; }
  Status put(std::string_view key, ByteView value) override;
  Result<std::vector<uint8_t>> get(std::string_view key) override;
  Result<size_t> getInto(std::string_view key, MutableByteView dst) override;
  Result<bool> exists(std::string_view key) override;
  Status remove(std::string_view key) override;

  const std::string& root() const { return root_; }

  FileStore(std::string root, FileStoreOptions options) : root_(std::move(root)), options_(options) {}

 private:
  Result<std::string> pathFor(std::string_view key) const;

  const std::string root_;
  const FileStoreOptions options_;
  std::atomic<uint64_t> temp_counter_{0};
};

}  // namespace kvdump

// WriterContext: one user-facing writer = the lifecycle pool + the store it writes to + the staging
// pool + key settings. Torch-free header so the pybind11 binding never sees libtorch headers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kvdump/async_writer.h"
#include "kvdump/block_key.h"
#include "kvdump/completion_board.h"
#include "kvdump/cache_store.h"
#include "kvdump/staging_pool.h"

namespace kvdump {

/// Options of a WriterContext; a plain value.
struct WriterContextOptions {
  WriterOptions writer;
  size_t staging_bytes = size_t{256} << 20;  // bound on bytes in flight between capture and store
  std::chrono::milliseconds staging_timeout{30000};  // how long a task waits for staging bytes
  HostAllocator staging_allocator;                   // empty: pageable host memory
  KeySpace keys;
};

/// Owns an AsyncWriter, shares ownership of its CacheStore, owns the staging pool. Thread-safe as its
/// parts are. Registered under an integer handle so that torch ops (which cannot take arbitrary
/// C++ objects as arguments) can find it; the handle is dropped when the context is destroyed.
class WriterContext {
 public:
  WriterContext(std::shared_ptr<CacheStore> store, WriterContextOptions options);
  ~WriterContext();
  WriterContext(const WriterContext&) = delete;
  WriterContext& operator=(const WriterContext&) = delete;

  AsyncWriter& writer() { return *writer_; }
  CacheStore& store() { return *store_; }
  const std::shared_ptr<CacheStore>& storePtr() const { return store_; }
  StagingPool& staging() { return *staging_; }
  /// Per-layer completion of asynchronous loads (decode side).
  CompletionBoard& loads() { return loads_; }
  const KeySpace& keys() const { return options_.keys; }
  const WriterContextOptions& options() const { return options_; }
  int64_t handle() const { return handle_; }

  /// The live context registered under `handle`, or nullptr. Thread-safe.
  static std::shared_ptr<WriterContext> lookup(int64_t handle);
  /// Makes a context and registers it; the registry holds only a weak reference.
  static std::shared_ptr<WriterContext> create(std::shared_ptr<CacheStore> store, WriterContextOptions options);

 private:
  const WriterContextOptions options_;
  std::shared_ptr<CacheStore> store_;
  std::unique_ptr<StagingPool> staging_;
  CompletionBoard loads_;
  // Declared last so it is destroyed first: its destructor joins the workers, whose tasks may
  // still touch the store and the staging pool.
  std::unique_ptr<AsyncWriter> writer_;
  int64_t handle_ = 0;
};

}  // namespace kvdump

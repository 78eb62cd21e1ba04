#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "kvdump/stores/file_store.h"
#include "store_conformance.h"

namespace kvdump::testing {
namespace {

std::unique_ptr<CacheStore> freshFileStore(bool fsync) {
  static std::atomic<int> counter{0};
  const char* tmp = std::getenv("TMPDIR");
  const std::string root = std::string(tmp ? tmp : "/tmp") + "/kvdump-filestore-test-" + std::to_string(::getpid()) +
                           "-" + std::to_string(counter++);
  auto store = FileStore::open(root, FileStoreOptions{fsync});
  if (!store.ok()) return nullptr;
  // Copy out of the shared_ptr into a unique_ptr the suite owns; the store holds only its root path.
  return std::make_unique<FileStore>(store.value()->root(), FileStoreOptions{fsync});
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(File, StoreConformance,
                         ::testing::Values(StoreFactory{"FileStore", [] { return freshFileStore(false); }},
                                           StoreFactory{"FileStoreFsync", [] { return freshFileStore(true); }}),
                         storeFactoryName);

}  // namespace kvdump::testing

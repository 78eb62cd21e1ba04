#include "kvdump/stores/delayed_store.h"
#include "kvdump/stores/memory_store.h"
#include "store_conformance.h"

namespace kvdump::testing {

INSTANTIATE_TEST_SUITE_P(Memory, StoreConformance,
                         ::testing::Values(StoreFactory{"MemoryStore",
                                                        [] { return std::make_unique<MemoryStore>(64u << 20); }},
                                           StoreFactory{"MemoryStoreRefusing",
                                                        [] {
                                                          MemoryStoreOptions o;
                                                          o.capacity_bytes = 64u << 20;
                                                          o.eviction = EvictionPolicy::kRefuse;
                                                          return MemoryStore::create(o).value();
                                                        }},
                                           StoreFactory{"DelayedMemoryStore",
                                                        [] {
                                                          return std::make_unique<DelayedStore>(
                                                              std::make_shared<MemoryStore>(64u << 20),
                                                              std::chrono::microseconds(50),
                                                              std::chrono::microseconds(50));
                                                        }}),
                         storeFactoryName);

}  // namespace kvdump::testing

#include "kvdump/memory_store.h"
#include "store_conformance.h"

namespace kvdump::testing {

INSTANTIATE_TEST_SUITE_P(Memory, StoreConformance,
                         ::testing::Values(StoreFactory{"MemoryStore",
                                                        [] { return std::make_unique<MemoryStore>(64u << 20); }},
                                           StoreFactory{"MemoryStoreOneShard",
                                                        [] { return std::make_unique<MemoryStore>(64u << 20, 1); }}),
                         storeFactoryName);

}  // namespace kvdump::testing

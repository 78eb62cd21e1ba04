#include "kvdump/stores/delayed_store.h"

#include <gtest/gtest.h>

#include "kvdump/stores/memory_store.h"

namespace kvdump {
namespace {

using namespace std::chrono_literals;

TEST(DelayedStore, BatchPutCostsOneDelayNotOnePerKey) {
  auto inner = std::make_shared<MemoryStore>(1 << 20);
  DelayedStore store(inner, 20ms, 0ms);
  std::vector<uint8_t> v(16, 1);
  std::vector<std::string> keys{"a", "b", "c", "d", "e"};
  std::vector<ByteView> values(keys.size(), ByteView{v.data(), v.size()});
  const auto start = std::chrono::steady_clock::now();
  auto statuses = store.batchPut(keys, values);
  const auto took = std::chrono::steady_clock::now() - start;
  for (auto& s : statuses) EXPECT_TRUE(s.ok());
  EXPECT_GE(took, 20ms);
  EXPECT_TRUE(inner->exists("e").value());  // it really forwarded
  EXPECT_EQ(store.name(), "delayed(memory)");
}

}  // namespace
}  // namespace kvdump

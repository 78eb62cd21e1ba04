// MemoryStore specifics beyond conformance: the full policy and byte accounting.
#include "kvdump/memory_store.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace kvdump {
namespace {

ByteView view(const std::vector<uint8_t>& v) { return {v.data(), v.size()}; }

TEST(MemoryStore, FullStoreRefusesPutAndEvictsNothing) {
  MemoryStore store(1000, 4);
  std::vector<uint8_t> v(400, 1);
  ASSERT_TRUE(store.put("a", view(v)).ok());
  ASSERT_TRUE(store.put("b", view(v)).ok());
  Status s = store.put("c", view(v));
  EXPECT_EQ(s.code(), StatusCode::kStoreFull);
  EXPECT_EQ(s.key(), "c");
  EXPECT_TRUE(store.exists("a").value());  // nothing was evicted to make room
  EXPECT_TRUE(store.exists("b").value());
  EXPECT_FALSE(store.exists("c").value());
  auto st = store.stats();
  EXPECT_EQ(st.used_bytes, 800u);
  EXPECT_EQ(st.entries, 2u);
  EXPECT_EQ(st.rejected_full, 1u);
  ASSERT_TRUE(store.remove("a").ok());
  EXPECT_TRUE(store.put("c", view(v)).ok());  // room again after an explicit remove
}

TEST(MemoryStore, OverwriteAccountsOnlyTheNewSize) {
  MemoryStore store(1000);
  std::vector<uint8_t> big(600, 1), small(100, 2);
  ASSERT_TRUE(store.put("k", view(big)).ok());
  ASSERT_TRUE(store.put("k", view(small)).ok());
  EXPECT_EQ(store.stats().used_bytes, 100u);
  EXPECT_EQ(store.stats().entries, 1u);
}

TEST(MemoryStore, ValueLargerThanCapacityIsRefused) {
  MemoryStore store(10);
  std::vector<uint8_t> v(11, 0);
  EXPECT_EQ(store.put("k", view(v)).code(), StatusCode::kStoreFull);
  EXPECT_EQ(store.stats().used_bytes, 0u);
}

TEST(MemoryStore, ConcurrentPutsNeverExceedCapacity) {
  MemoryStore store(100 * 1000, 8);
  std::vector<std::thread> threads;
  std::atomic<int> accepted{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> v(1000, static_cast<uint8_t>(t));
      for (int i = 0; i < 50; ++i) {
        if (store.put("t" + std::to_string(t) + "/" + std::to_string(i), view(v)).ok()) ++accepted;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(accepted.load(), 100);  // exactly capacity / value size fit, the rest were refused
  EXPECT_EQ(store.stats().used_bytes, 100u * 1000u);
  EXPECT_EQ(store.stats().rejected_full, 100u);
}

}  // namespace
}  // namespace kvdump

// Conformance cases every store must pass. Linked into each store's test binary section via the header.
#include "store_conformance.h"

#include <algorithm>
#include <atomic>
#include <numeric>
#include <thread>
#include <vector>

#include "kvdump/block_key.h"

namespace kvdump::testing {
namespace {

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 31);
  return v;
}

ByteView view(const std::vector<uint8_t>& v) { return {v.data(), v.size()}; }

TEST_P(StoreConformance, PutThenGetReturnsTheSameBytes) {
  auto v = pattern(4097, 3);
  ASSERT_TRUE(store_->put("ns/a/0", view(v)).ok());
  auto got = store_->get("ns/a/0");
  ASSERT_TRUE(got.ok()) << got.status().toString();
  EXPECT_EQ(got.value(), v);
}

TEST_P(StoreConformance, MissingKeyIsNotFoundWithTheKey) {
  auto got = store_->get("ns/missing/0");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(got.status().key(), "ns/missing/0");
  auto ex = store_->exists("ns/missing/0");
  ASSERT_TRUE(ex.ok());
  EXPECT_FALSE(ex.value());
  EXPECT_EQ(store_->remove("ns/missing/0").code(), StatusCode::kNotFound);
}

TEST_P(StoreConformance, ExistsAndRemove) {
  auto v = pattern(100, 9);
  ASSERT_TRUE(store_->put("k1", view(v)).ok());
  EXPECT_TRUE(store_->exists("k1").value());
  ASSERT_TRUE(store_->remove("k1").ok());
  EXPECT_FALSE(store_->exists("k1").value());
  EXPECT_EQ(store_->get("k1").status().code(), StatusCode::kNotFound);
}

TEST_P(StoreConformance, OverwriteReplacesTheValue) {
  auto a = pattern(300, 1), b = pattern(200, 2);
  ASSERT_TRUE(store_->put("k", view(a)).ok());
  ASSERT_TRUE(store_->put("k", view(b)).ok());
  EXPECT_EQ(store_->get("k").value(), b);
}

TEST_P(StoreConformance, EmptyValueRoundTrips) {
  std::vector<uint8_t> empty;
  ASSERT_TRUE(store_->put("empty", view(empty)).ok());
  auto got = store_->get("empty");
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got.value().empty());
}

TEST_P(StoreConformance, GetIntoCopiesAndRefusesSmallBuffers) {
  auto v = pattern(1000, 5);
  ASSERT_TRUE(store_->put("k", view(v)).ok());
  std::vector<uint8_t> dst(2000, 0);
  auto n = store_->getInto("k", {dst.data(), dst.size()});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n.value(), 1000u);
  EXPECT_TRUE(std::equal(v.begin(), v.end(), dst.begin()));
  std::vector<uint8_t> small(10);
  auto refused = store_->getInto("k", {small.data(), small.size()});
  EXPECT_EQ(refused.status().code(), StatusCode::kTooLarge);
  EXPECT_EQ(refused.status().key(), "k");
}

TEST_P(StoreConformance, BatchCallsReturnOneResultPerKeyInOrder) {
  std::vector<std::vector<uint8_t>> values;
  std::vector<std::string> keys;
  std::vector<ByteView> views;
  for (int i = 0; i < 32; ++i) {
    keys.push_back("batch/" + std::to_string(i));
    values.push_back(pattern(static_cast<size_t>(64 + i), static_cast<uint8_t>(i)));
  }
  for (auto& v : values) views.push_back(view(v));
  auto put = store_->batchPut(keys, views);
  ASSERT_EQ(put.size(), keys.size());
  for (auto& s : put) ASSERT_TRUE(s.ok()) << s.toString();

  keys.push_back("batch/absent");
  std::vector<std::vector<uint8_t>> dsts(keys.size(), std::vector<uint8_t>(256));
  std::vector<MutableByteView> dst_views;
  for (auto& d : dsts) dst_views.push_back({d.data(), d.size()});
  auto got = store_->batchGetInto(keys, dst_views);
  ASSERT_EQ(got.size(), keys.size());
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_TRUE(got[i].ok());
    ASSERT_EQ(got[i].value(), values[i].size());
    EXPECT_TRUE(std::equal(values[i].begin(), values[i].end(), dsts[i].begin())) << i;
  }
  EXPECT_EQ(got.back().status().code(), StatusCode::kNotFound);
  auto ex = store_->batchExists(keys);
  ASSERT_EQ(ex.size(), keys.size());
  EXPECT_TRUE(ex.front().value());
  EXPECT_FALSE(ex.back().value());
}

TEST_P(StoreConformance, BatchPutWithMismatchedLengthsFailsEveryKey) {
  std::vector<std::string> keys{"x", "y"};
  auto v = pattern(4, 0);
  auto put = store_->batchPut(keys, {view(v)});
  ASSERT_EQ(put.size(), 2u);
  EXPECT_EQ(put[0].code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(store_->exists("x").value());
}

TEST_P(StoreConformance, BatchPutFailsOnlyTheBadKeysAndTheLastValueOfARepeatedKeyWins) {
  auto first = pattern(96, 1), second = pattern(80, 2), other = pattern(72, 3);
  std::vector<std::string> keys{"bp/a", "", "bp/b", "bp/a"};
  auto put = store_->batchPut(keys, {view(first), view(other), view(other), view(second)});
  ASSERT_EQ(put.size(), keys.size());
  EXPECT_TRUE(put[0].ok()) << put[0].toString();
  EXPECT_EQ(put[1].code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(put[2].ok()) << put[2].toString();
  EXPECT_TRUE(put[3].ok()) << put[3].toString();
  auto a = store_->get("bp/a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a.value(), second);
  auto b = store_->get("bp/b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b.value(), other);
}

TEST_P(StoreConformance, ConcurrentWritersAndReadersSeeWholeValues) {
  constexpr int kThreads = 4, kKeys = 50;
  std::vector<std::thread> threads;
  std::atomic<int> torn{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kKeys; ++i) {
        const std::string key = "c/" + std::to_string(i);
        // Every writer writes a value whose bytes are all equal, so a torn read is detectable.
        std::vector<uint8_t> v(512 + static_cast<size_t>(t), static_cast<uint8_t>(t + 1));
        ASSERT_TRUE(store_->put(key, view(v)).ok());
        auto got = store_->get(key);
        if (!got.ok()) continue;  // another thread's remove is not a violation
        const auto& bytes = got.value();
        if (bytes.empty()) continue;
        const uint8_t first = bytes.front();
        const size_t expected_size = 512 + static_cast<size_t>(first - 1);
        if (bytes.size() != expected_size ||
            std::any_of(bytes.begin(), bytes.end(), [&](uint8_t b) { return b != first; })) {
          ++torn;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(torn.load(), 0);
  for (int i = 0; i < kKeys; ++i) EXPECT_TRUE(store_->exists("c/" + std::to_string(i)).value());
}

TEST_P(StoreConformance, KeysWithSlashesAndDotsAreOpaque) {
  auto v = pattern(16, 7);
  const std::string key = "model.v1/tp0-of-2/0123456789abcdef/layer.07";
  ASSERT_TRUE(store_->put(key, view(v)).ok());
  EXPECT_EQ(store_->get(key).value(), v);
  EXPECT_FALSE(store_->exists("model.v1/tp0-of-2").value());
}

TEST_P(StoreConformance, KeysNamingDirectoriesOnAFilesystemAreOrdinaryKeys) {
  for (const std::string key : {".", "..", "...", "./x", "../x"}) {
    auto v = pattern(8, static_cast<uint8_t>(key.size()));
    ASSERT_TRUE(store_->put(key, view(v)).ok()) << key;
    EXPECT_EQ(store_->get(key).value(), v) << key;
    EXPECT_TRUE(store_->exists(key).value()) << key;
  }
  for (const std::string key : {".", "..", "...", "./x", "../x"}) EXPECT_TRUE(store_->remove(key).ok()) << key;
  EXPECT_FALSE(store_->exists(".").value());
}

TEST_P(StoreConformance, EmptyKeyIsInvalid) {
  auto v = pattern(4, 0);
  EXPECT_EQ(store_->put("", view(v)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->get("").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->getInto("", {v.data(), v.size()}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->exists("").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->remove("").code(), StatusCode::kInvalidArgument);
}


// ---- store-owned destinations: every store either lends memory by these rules or says it does not

TEST_P(StoreConformance, StoresThatDoNotLendSayUnsupported) {
  if (store_->lendsMemory()) GTEST_SKIP() << "this store lends memory";
  auto slots = store_->lendSlots({"ns/lend/0"}, 16);
  ASSERT_EQ(slots.size(), 1u);
  EXPECT_EQ(slots[0].status().code(), StatusCode::kUnsupported);
  EXPECT_EQ(slots[0].status().key(), "ns/lend/0");
}

TEST_P(StoreConformance, ALentSlotIsInvisibleUntilPublished) {
  if (!store_->lendsMemory()) GTEST_SKIP() << "this store does not lend memory";
  auto old = pattern(300, 1), fresh = pattern(300, 2);
  ASSERT_TRUE(store_->put("ns/lend/0", view(old)).ok());
  auto slots = store_->lendSlots({"ns/lend/0", "ns/lend/1"}, fresh.size());
  ASSERT_EQ(slots.size(), 2u);
  for (auto& slot : slots) {
    ASSERT_TRUE(slot.ok()) << slot.status().toString();
    ASSERT_EQ(slot.value().size, fresh.size());
    std::copy(fresh.begin(), fresh.end(), slot.value().data);
  }
  EXPECT_EQ(store_->get("ns/lend/0").value(), old);
  EXPECT_FALSE(store_->exists("ns/lend/1").value());
  auto published = store_->publishSlots({slots[0].value(), slots[1].value()});
  ASSERT_EQ(published.size(), 2u);
  EXPECT_TRUE(published[0].ok() && published[1].ok());
  EXPECT_EQ(store_->get("ns/lend/0").value(), fresh);
  EXPECT_EQ(store_->get("ns/lend/1").value(), fresh);
  // A slot is published once; a second publish is refused, not a second copy.
  EXPECT_EQ(store_->publishSlots({slots[0].value()})[0].code(), StatusCode::kInvalidArgument);
}

TEST_P(StoreConformance, AnAbandonedSlotIsNeverVisible) {
  if (!store_->lendsMemory()) GTEST_SKIP() << "this store does not lend memory";
  auto slots = store_->lendSlots({"ns/abandon/0"}, 64 * 1024);
  ASSERT_TRUE(slots[0].ok());
  std::fill(slots[0].value().data, slots[0].value().data + slots[0].value().size, 7);
  store_->abandonSlots({slots[0].value()});
  EXPECT_FALSE(store_->exists("ns/abandon/0").value());
  EXPECT_EQ(store_->get("ns/abandon/0").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->publishSlots({slots[0].value()})[0].code(), StatusCode::kInvalidArgument);
  store_->abandonSlots({slots[0].value()});  // twice is harmless
}

TEST_P(StoreConformance, ReadLeasedLendsTheWholeValueAndReturnsTheReadersStatus) {
  auto v = pattern(5000, 4);
  ASSERT_TRUE(store_->put("ns/lease/0", view(v)).ok());
  std::vector<uint8_t> seen;
  Status s = store_->readLeased("ns/lease/0", [&](ByteView held) {
    seen.assign(held.data, held.data + held.size);
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.toString();
  EXPECT_EQ(seen, v);
  Status failed = store_->readLeased("ns/lease/0", [](ByteView) { return Status::ChecksumMismatch("reader says no"); });
  EXPECT_EQ(failed.code(), StatusCode::kChecksumMismatch);
  Status missing = store_->readLeased("ns/lease/none", [](ByteView) { return Status::Ok(); });
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.key(), "ns/lease/none");
  // A lease ends with the call: the key can be replaced and removed afterwards.
  EXPECT_TRUE(store_->put("ns/lease/0", view(pattern(10, 1))).ok());
  EXPECT_TRUE(store_->remove("ns/lease/0").ok());
}

TEST_P(StoreConformance, DiscardNeverRemovesACommittedBlockAndIgnoresMissingKeys) {
  const KeySpace space;
  auto v = pattern(1000, 5);
  std::vector<std::string> keys{blockKey(space, 42, 0), blockKey(space, 42, 1)};
  for (const auto& k : keys) ASSERT_TRUE(store_->put(k, view(v)).ok());
  ASSERT_TRUE(store_->put(commitKey(space, 42), view(pattern(48, 1))).ok());
  store_->discard(keys);
  store_->discard({blockKey(space, 43, 0), "not/a/kvdump/key"});
  for (const auto& k : keys) EXPECT_EQ(store_->get(k).value(), v);
  EXPECT_TRUE(store_->exists(commitKey(space, 42)).value());
}

}  // namespace
}  // namespace kvdump::testing

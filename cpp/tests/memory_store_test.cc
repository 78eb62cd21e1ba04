// MemoryStore specifics beyond conformance: the arena, the policies, eviction by block, leases.
#include "kvdump/stores/memory_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "kvdump/block_key.h"
#include "kvdump/commit_record.h"

namespace kvdump {
namespace {

ByteView view(const std::vector<uint8_t>& v) { return {v.data(), v.size()}; }

std::shared_ptr<MemoryStore> make(size_t capacity, EvictionPolicy policy, size_t slab = 0, double high = 0.9,
                                  double low = 0.8) {
  MemoryStoreOptions o;
  o.capacity_bytes = capacity;
  o.eviction = policy;
  o.slab_bytes = slab;
  o.high_watermark = high;
  o.low_watermark = low;
  auto store = MemoryStore::create(o);
  EXPECT_TRUE(store.ok()) << store.status().toString();
  return store.value();
}

KeySpace space() { return KeySpace{}; }

// One slab of eight 1 KiB slots for 1000-byte values, with room in the capacity for the inline
// commit records too, so tests count slots alone.
constexpr size_t kEightSlots = 8 * 1024 + 128;

// Stores layers [0, layers) of block `hash`, each value filled with `fill`, and commits it if asked.
void storeBlock(CacheStore& store, uint64_t hash, int layers, size_t bytes, uint8_t fill, bool commit) {
  std::vector<uint8_t> v(bytes, fill);
  for (int l = 0; l < layers; ++l) ASSERT_TRUE(store.put(blockKey(space(), hash, l), view(v)).ok());
  std::vector<uint8_t> record(48, fill);
  if (commit) ASSERT_TRUE(store.put(commitKey(space(), hash), view(record)).ok());
}

bool present(CacheStore& store, const std::string& key) { return store.exists(key).value(); }

TEST(MemoryStore, RefusePolicyKeepsEveryCommittedValue) {
  auto store = make(4096, EvictionPolicy::kRefuse, 1024);
  std::vector<uint8_t> v(1000, 1);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(store->put("k" + std::to_string(i), view(v)).ok());
  Status s = store->put("k4", view(v));
  EXPECT_EQ(s.code(), StatusCode::kStoreFull);
  EXPECT_EQ(s.key(), "k4");
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(present(*store, "k" + std::to_string(i)));
  EXPECT_EQ(store->stats().rejected_full, 1u);
  EXPECT_EQ(store->stats().evictions, 0u);
  ASSERT_TRUE(store->remove("k0").ok());
  EXPECT_TRUE(store->put("k4", view(v)).ok());  // room again after an explicit remove
}

TEST(MemoryStore, EvictPolicyDropsTheLeastRecentlyUsedFirst) {
  auto store = make(4096, EvictionPolicy::kEvict, 1024, 1.0, 1.0);
  std::vector<uint8_t> v(1000, 1);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(store->put("k" + std::to_string(i), view(v)).ok());
  ASSERT_TRUE(store->get("k0").ok());  // k0 becomes the most recently used; k1 is now the oldest
  ASSERT_TRUE(store->put("k4", view(v)).ok());
  EXPECT_TRUE(present(*store, "k0"));
  EXPECT_FALSE(present(*store, "k1"));
  EXPECT_TRUE(present(*store, "k4"));
  EXPECT_EQ(store->stats().evictions, 1u);
  EXPECT_EQ(store->stats().rejected_full, 0u);
}

TEST(MemoryStore, WatermarksEvictDownToTheLowMark) {
  // 16 slots of 1 KiB; eviction starts past 12 (75%) and stops at 8 (50%).
  auto store = make(16 * 1024, EvictionPolicy::kEvict, 16 * 1024, 0.75, 0.5);
  std::vector<uint8_t> v(1000, 1);
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(store->put("k" + std::to_string(i), view(v)).ok());
  EXPECT_EQ(store->stats().evictions, 0u);
  ASSERT_TRUE(store->put("k12", view(v)).ok());
  EXPECT_EQ(store->stats().evictions, 5u);  // 13 slots would pass 12: evict until 7 + 1 <= 8
  EXPECT_EQ(store->stats().entries, 8u);
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(present(*store, "k" + std::to_string(i)));
  for (int i = 5; i < 13; ++i) EXPECT_TRUE(present(*store, "k" + std::to_string(i)));
}

TEST(MemoryStore, ABlockIsEvictedWholeWithItsCommitRecord) {
  auto store = make(8 * 1024, EvictionPolicy::kEvict, 8 * 1024, 1.0, 1.0);
  storeBlock(*store, 1, 3, 1000, 1, true);
  storeBlock(*store, 2, 3, 1000, 2, true);
  ASSERT_TRUE(store->get(commitKey(space(), 1)).ok());  // block 1 used more recently than block 2
  std::vector<uint8_t> v(1000, 9);
  ASSERT_TRUE(store->put("other", view(v)).ok());
  ASSERT_TRUE(store->put("other2", view(v)).ok());
  ASSERT_TRUE(store->put("other3", view(v)).ok());  // needs a slot: block 2 goes, all of it
  EXPECT_FALSE(present(*store, commitKey(space(), 2)));
  for (int l = 0; l < 3; ++l) EXPECT_FALSE(present(*store, blockKey(space(), 2, l)));
  EXPECT_TRUE(present(*store, commitKey(space(), 1)));
  for (int l = 0; l < 3; ++l) EXPECT_TRUE(present(*store, blockKey(space(), 1, l)));
  EXPECT_EQ(store->stats().evictions, 4u);  // three layers and the commit record
}

TEST(MemoryStore, BlocksOfAnOpenCycleAreNeverEvicted) {
  auto store = make(4 * 1024, EvictionPolicy::kEvict, 4 * 1024);
  storeBlock(*store, 1, 4, 1000, 1, false);  // stored, not yet committed or discarded
  std::vector<uint8_t> v(1000, 2);
  Status s = store->put("late", view(v));
  EXPECT_EQ(s.code(), StatusCode::kStoreFull);
  for (int l = 0; l < 4; ++l) EXPECT_TRUE(present(*store, blockKey(space(), 1, l)));
}

TEST(MemoryStore, DiscardedBlocksAreReclaimedBeforeCommittedOnes) {
  auto store = make(kEightSlots, EvictionPolicy::kEvict, kEightSlots, 1.0, 1.0);
  storeBlock(*store, 1, 4, 1000, 1, true);   // committed, the oldest
  storeBlock(*store, 2, 4, 1000, 2, false);  // its cycle failed:
  std::vector<std::string> keys;
  for (int l = 0; l < 4; ++l) keys.push_back(blockKey(space(), 2, l));
  store->discard(keys);
  std::vector<uint8_t> v(1000, 3);
  ASSERT_TRUE(store->put("new", view(v)).ok());
  EXPECT_EQ(store->stats().reclaimed, 4u);
  EXPECT_EQ(store->stats().evictions, 0u);
  EXPECT_TRUE(present(*store, commitKey(space(), 1)));
  for (int l = 0; l < 4; ++l) EXPECT_FALSE(present(*store, keys[l]));
}

TEST(MemoryStore, RefusePolicyStillReclaimsFailedCycles) {
  auto store = make(4 * 1024, EvictionPolicy::kRefuse, 4 * 1024);
  storeBlock(*store, 2, 4, 1000, 2, false);
  std::vector<std::string> keys;
  for (int l = 0; l < 4; ++l) keys.push_back(blockKey(space(), 2, l));
  store->discard(keys);
  std::vector<uint8_t> v(1000, 3);
  EXPECT_TRUE(store->put("new", view(v)).ok());
  EXPECT_EQ(store->stats().reclaimed, 4u);
}

TEST(MemoryStore, DiscardNeverDropsACommittedBlock) {
  auto store = make(kEightSlots, EvictionPolicy::kRefuse, kEightSlots);
  storeBlock(*store, 1, 2, 1000, 1, true);
  storeBlock(*store, 1, 2, 1000, 1, false);  // a later cycle rewrites it, then fails
  store->discard({blockKey(space(), 1, 0), blockKey(space(), 1, 1)});
  std::vector<uint8_t> v(1000, 3);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(store->put("k" + std::to_string(i), view(v)).ok());
  EXPECT_EQ(store->put("k6", view(v)).code(), StatusCode::kStoreFull);
  EXPECT_TRUE(present(*store, blockKey(space(), 1, 0)));
  EXPECT_TRUE(present(*store, commitKey(space(), 1)));
}

// A real record (what publishCommits puts) for layers `layers` of block `hash`.
std::vector<uint8_t> commitRecord(uint64_t hash, LayerRange layers) {
  std::vector<uint8_t> record(CommitRecord::kBytes);
  encodeCommitRecord(CommitRecord{layers, keySpaceFingerprint(space()), hash}, record.data());
  return record;
}

TEST(MemoryStore, ACommitRecordOverALayerItDoesNotHoldIsRefusedAndTheOldOneKept) {
  auto store = make(kEightSlots, EvictionPolicy::kEvict, kEightSlots, 1.0, 1.0);
  storeBlock(*store, 1, 2, 1000, 1, false);
  const std::string whole = commitKey(space(), 1);
  Status s = store->put(whole, view(commitRecord(1, {0, 3})));  // layer 2 was never stored
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.toString();
  EXPECT_EQ(s.key(), whole);
  EXPECT_NE(s.message().find("layer 2"), std::string::npos) << s.message();
  EXPECT_FALSE(present(*store, whole));
  const std::string stage = commitKey(space(), 1, {1, 2});
  ASSERT_TRUE(store->put(stage, view(commitRecord(1, {1, 2}))).ok());  // a stage's range it holds
  ASSERT_TRUE(store->put(whole, view(commitRecord(1, {0, 2}))).ok());
  // A refused replacement leaves the published record as it was.
  EXPECT_EQ(store->put(whole, view(commitRecord(1, {0, 3}))).code(), StatusCode::kNotFound);
  Result<std::vector<uint8_t>> kept = store->get(whole);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept.value(), commitRecord(1, {0, 2}));
  EXPECT_EQ(lookupCommitted(*store, space(), {1}, {0, 2}).value(), 1u);
}

TEST(MemoryStore, ACommitRecordOverLayersReclaimedMeanwhileIsRefused) {
  auto store = make(kEightSlots, EvictionPolicy::kEvict, kEightSlots, 1.0, 1.0);
  storeBlock(*store, 7, 4, 1000, 1, false);
  // A discard that reaches the block before its record (another writer's, or a stale one under the
  // same keys) makes it reclaimable; a put that needs room then takes it.
  std::vector<std::string> keys;
  for (int l = 0; l < 4; ++l) keys.push_back(blockKey(space(), 7, l));
  store->discard(keys);
  std::vector<uint8_t> v(1000, 3);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(store->put("other" + std::to_string(i), view(v)).ok());
  ASSERT_EQ(store->stats().reclaimed, 4u);
  EXPECT_EQ(store->put(commitKey(space(), 7), view(commitRecord(7, {0, 4}))).code(), StatusCode::kNotFound);
  EXPECT_EQ(lookupCommitted(*store, space(), {7}, {0, 4}).value(), 0u);
}

TEST(MemoryStore, ALeasedBlockSurvivesAnEvictionWaveIntact) {
  auto store = make(16 * 1024, EvictionPolicy::kEvict, 16 * 1024);
  storeBlock(*store, 7, 2, 1000, 7, true);
  const std::string key = blockKey(space(), 7, 1);
  Status read = store->readLeased(key, [&](ByteView held) {
    // While the lease is held, another thread writes four times the capacity.
    std::thread writer([&] {
      std::vector<uint8_t> v(1000, 1);
      for (int i = 0; i < 64; ++i) EXPECT_TRUE(store->put("w" + std::to_string(i), view(v)).ok());
    });
    writer.join();
    for (size_t i = 0; i < held.size; ++i) {
      if (held.data[i] != 7) return Status::Internal("leased bytes changed under the reader");
    }
    return Status::Ok();
  });
  EXPECT_TRUE(read.ok()) << read.toString();
  EXPECT_GT(store->stats().evictions, 0u);
  EXPECT_TRUE(present(*store, commitKey(space(), 7)));  // the whole block stayed: one layer was leased
  EXPECT_TRUE(present(*store, blockKey(space(), 7, 0)));
}

TEST(MemoryStore, AValueReplacedUnderAReaderStaysWholeForIt) {
  auto store = make(16 * 1024, EvictionPolicy::kEvict, 16 * 1024);
  std::vector<uint8_t> a(1000, 1), b(1000, 2);
  ASSERT_TRUE(store->put("k", view(a)).ok());
  Status read = store->readLeased("k", [&](ByteView held) {
    EXPECT_TRUE(store->put("k", view(b)).ok());
    EXPECT_TRUE(store->remove("k").ok());
    EXPECT_TRUE(store->put("k2", view(b)).ok());
    return held.data[0] == 1 && held.data[999] == 1 ? Status::Ok() : Status::Internal("torn");
  });
  EXPECT_TRUE(read.ok());
  EXPECT_EQ(store->stats().used_bytes, 1000u);  // the replaced value was freed when the reader left
}

TEST(MemoryStore, LentSlotIsInvisibleUntilPublishedAndAbandonedOneNever) {
  auto store = make(16 * 1024, EvictionPolicy::kEvict, 16 * 1024);
  std::vector<uint8_t> old(100, 1);
  ASSERT_TRUE(store->put("k", view(old)).ok());
  auto slots = store->lendSlots({"k", "fresh"}, 100);
  ASSERT_TRUE(slots[0].ok() && slots[1].ok());
  std::memset(slots[0].value().data, 2, 100);
  std::memset(slots[1].value().data, 2, 100);
  EXPECT_EQ(store->get("k").value()[0], 1);  // the old value until publish
  EXPECT_FALSE(present(*store, "fresh"));
  store->abandonSlots({slots[1].value()});
  EXPECT_EQ(store->publishSlots({slots[0].value()})[0].code(), StatusCode::kOk);
  EXPECT_EQ(store->get("k").value()[0], 2);
  EXPECT_FALSE(present(*store, "fresh"));
  // Neither token is lent any more.
  EXPECT_EQ(store->publishSlots({slots[1].value()})[0].code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->publishSlots({slots[0].value()})[0].code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->stats().lent, 0u);
}

TEST(MemoryStore, TooLargeValuesNameTheLimit) {
  auto store = make(64 * 1024, EvictionPolicy::kEvict, 4096);
  std::vector<uint8_t> v(5000, 0);
  EXPECT_EQ(store->put("slab", view(v)).code(), StatusCode::kTooLarge);
  std::vector<uint8_t> w(70000, 0);
  EXPECT_EQ(store->put("cap", view(w)).code(), StatusCode::kStoreFull);
  EXPECT_EQ(store->stats().used_bytes, 0u);
}

TEST(MemoryStore, BadOptionsAreRefusedNamingTheField) {
  MemoryStoreOptions o;
  o.capacity_bytes = 1 << 20;
  o.high_watermark = 0.5;
  o.low_watermark = 0.7;
  auto r = MemoryStore::create(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("low_watermark"), std::string::npos);
  o = MemoryStoreOptions{};
  o.capacity_bytes = 1 << 20;
  o.slab_bytes = 8;
  r = MemoryStore::create(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("slab_bytes"), std::string::npos);
}

TEST(MemoryStore, TwoSizeClassesShareTheArenaAsSlabsFree) {
  auto store = make(8 * 4096, EvictionPolicy::kRefuse, 4096);
  std::vector<uint8_t> small(1000, 1), large(4000, 2);
  for (int i = 0; i < 32; ++i) ASSERT_TRUE(store->put("s" + std::to_string(i), view(small)).ok());
  EXPECT_EQ(store->put("L", view(large)).code(), StatusCode::kStoreFull);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(store->remove("s" + std::to_string(i)).ok());  // one whole slab
  EXPECT_TRUE(store->put("L", view(large)).ok());
}

TEST(MemoryStore, ConcurrentPutsNeverExceedCapacity) {
  auto store = make(100 * 1024, EvictionPolicy::kRefuse, 100 * 1024);
  std::vector<std::thread> threads;
  std::atomic<int> accepted{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> v(1000, static_cast<uint8_t>(t));
      for (int i = 0; i < 50; ++i) {
        if (store->put("t" + std::to_string(t) + "/" + std::to_string(i), view(v)).ok()) ++accepted;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(accepted.load(), 100);  // exactly capacity / slot size fit, the rest were refused
  EXPECT_EQ(store->stats().used_bytes, 100u * 1000u);
  EXPECT_EQ(store->stats().rejected_full, 100u);
}

TEST(MemoryStore, ReadersRacingEvictionsSeeWholeValuesOrNothing) {
  auto store = make(64 * 1024, EvictionPolicy::kEvict, 64 * 1024);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> torn{0}, read_ok{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      for (uint64_t i = 0; i < 400; ++i) {
        const uint64_t hash = w * 1000 + i;
        std::vector<uint8_t> v(1000, static_cast<uint8_t>(hash));
        std::vector<std::string> keys{blockKey(space(), hash, 0), blockKey(space(), hash, 1)};
        auto slots = store->lendSlots(keys, v.size());
        std::vector<LentSlot> lent;
        for (auto& s : slots) {
          if (!s.ok()) continue;
          std::memcpy(s.value().data, v.data(), v.size());
          lent.push_back(s.value());
        }
        if (i % 3 == 0) {
          store->abandonSlots(lent);
          continue;
        }
        store->publishSlots(lent);
        if (i % 3 == 1) {
          std::vector<uint8_t> record(48, 0);
          store->put(commitKey(space(), hash), view(record));
        } else {
          store->discard(keys);
        }
      }
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        for (uint64_t hash = 0; hash < 1400; hash += 7) {
          store->readLeased(blockKey(space(), hash, hash % 2), [&](ByteView v) {
            for (size_t i = 0; i < v.size; ++i) {
              if (v.data[i] != static_cast<uint8_t>(hash)) {
                ++torn;
                break;
              }
            }
            ++read_ok;
            return Status::Ok();
          });
        }
      }
    });
  }
  threads[0].join();
  threads[1].join();
  stop = true;
  for (size_t i = 2; i < threads.size(); ++i) threads[i].join();
  EXPECT_EQ(torn.load(), 0u);
  const MemoryStoreStats st = store->stats();
  EXPECT_LE(st.used_bytes, st.capacity_bytes);
  EXPECT_EQ(st.lent, 0u);
  EXPECT_EQ(st.leased, 0u);
  EXPECT_GT(st.evictions + st.reclaimed, 0u);
}

TEST(MemoryStore, ACustomAllocatorIsAskedForWholeSlabPiecesAllReleased) {
  std::vector<size_t> asked;
  std::atomic<int> live{0};
  MemoryStoreOptions o;
  o.capacity_bytes = (size_t{600} << 20) + 1;  // 600 MiB and a byte: whole 4 MiB slabs, in 256 MiB pieces
  // Pageable memory that counts the pieces alive.
  auto counted = [&](size_t bytes) -> Result<HostAllocation> {
    asked.push_back(bytes);
    Result<HostAllocation> memory = pageableHostAllocator()(bytes);
    ++live;
    auto release = memory.value().release;
    memory.value().release = [release, &live] {
      release();
      --live;
    };
    return memory;
  };
  o.allocator = counted;
  {
    auto store = MemoryStore::create(o);
    ASSERT_TRUE(store.ok()) << store.status().toString();
    EXPECT_EQ(asked, (std::vector<size_t>{size_t{256} << 20, size_t{256} << 20, size_t{92} << 20}));
    EXPECT_EQ(live.load(), 3);
    std::vector<uint8_t> v(4 << 20, 1);  // a value as large as a slab fits in any piece
    EXPECT_TRUE(store.value()->put("big", view(v)).ok());
  }
  EXPECT_EQ(live.load(), 0);

  // A piece that cannot be had fails the store, and the pieces already had are given back.
  asked.clear();
  o.allocator = [&](size_t bytes) -> Result<HostAllocation> {
    if (!asked.empty()) return Status::IoError("no more pinned memory");
    return counted(bytes);
  };
  auto failed = MemoryStore::create(o);
  EXPECT_EQ(failed.status().code(), StatusCode::kIoError);
  EXPECT_EQ(live.load(), 0);
}

}  // namespace
}  // namespace kvdump

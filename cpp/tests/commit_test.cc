// Commit records and the ledger behind them: what is published, and what a reader trusts.
#include <gtest/gtest.h>

#include <memory>

#include "kvdump/commit_claims.h"
#include "kvdump/commit_ledger.h"
#include "kvdump/commit_record.h"
#include "kvdump/stores/memory_store.h"

namespace kvdump {
namespace {

constexpr uint64_t kCycle = 7;

void record(CommitLedger& ledger, const std::string& request, uint32_t layer, std::vector<uint64_t> hashes,
            std::vector<bool> ok = {}) {
  std::vector<Status> results(hashes.size());
  for (size_t i = 0; i < ok.size(); ++i) {
    if (!ok[i]) results[i] = Status::IoError("put failed");
  }
  ledger.record(kCycle, request, layer, hashes.data(), results.data(), hashes.size());
}

TEST(CommitLedger, PublishesOnlyRequestsWithEveryExpectedLayer) {
  CommitLedger ledger;
  for (uint32_t layer = 0; layer < 4; ++layer) record(ledger, "D", layer, {1, 2});
  for (uint32_t layer = 0; layer < 2; ++layer) record(ledger, "C", layer, {7});
  LedgerSnapshot snapshot = ledger.take(kCycle);
  EXPECT_EQ(observedLayers(snapshot).end, 4u);
  EXPECT_EQ(publishableBlocks(snapshot, observedLayers(snapshot), {}), (std::vector<uint64_t>{1, 2}));
  EXPECT_TRUE(ledger.take(kCycle).empty());
}

TEST(CommitLedger, AnEarlierCycleNeverLeaksIntoALaterOne) {
  CommitLedger ledger;
  record(ledger, "aborted", 0, {1});  // recorded by cycle 7, which was aborted and never taken
  std::vector<Status> ok(1);
  const uint64_t hash = 2;
  ledger.record(kCycle + 1, "next", 0, &hash, ok.data(), 1);
  EXPECT_TRUE(ledger.recorded(kCycle + 1));
  std::vector<LedgerSnapshot> earlier;
  LedgerSnapshot next = ledger.take(kCycle + 1, &earlier);
  EXPECT_EQ(next.size(), 1u);
  EXPECT_EQ(next.count("next"), 1u);
  // The aborted cycle's records come out beside it, for the writer to discard, and only once.
  ASSERT_EQ(earlier.size(), 1u);
  EXPECT_EQ(earlier[0].count("aborted"), 1u);
  EXPECT_EQ(storedKeys(earlier[0], KeySpace{}), (std::vector<std::string>{blockKey(KeySpace{}, 1, 0)}));
  EXPECT_TRUE(ledger.take(kCycle).empty());
  EXPECT_FALSE(ledger.recorded(kCycle + 1));
}

TEST(CommitLedger, NeverPublishesABlockAfterAGap) {
  CommitLedger ledger;
  record(ledger, "r", 0, {1, 2, 3});
  record(ledger, "r", 1, {1, 2, 3}, {true, false, true});
  EXPECT_EQ(publishableBlocks(ledger.take(kCycle), {0, 2}, {}), (std::vector<uint64_t>{1}));
}

TEST(CommitLedger, ExcludedRequestsPublishNothingButSharedBlocksOfOthersDo) {
  CommitLedger ledger;
  record(ledger, "bad", 0, {1, 5});
  record(ledger, "good", 0, {1, 2});
  EXPECT_EQ(publishableBlocks(ledger.take(kCycle), {0, 1}, {"bad"}), (std::vector<uint64_t>{1, 2}));
}

TEST(CommitLedger, ADeclaredStageNeedsOnlyItsOwnLayers) {
  CommitLedger ledger;
  record(ledger, "r", 16, {9});
  record(ledger, "r", 17, {9});
  LedgerSnapshot snapshot = ledger.take(kCycle);
  EXPECT_EQ(publishableBlocks(snapshot, {16, 18}, {}), (std::vector<uint64_t>{9}));
  EXPECT_TRUE(publishableBlocks(snapshot, {16, 19}, {}).empty());
}

TEST(CommitRecord, RoundTripsAndRefusesAnyFlippedByte) {
  CommitRecord r{{0, 32}, 0x1234, 0xabcdef};
  uint8_t bytes[CommitRecord::kBytes];
  encodeCommitRecord(r, bytes);
  auto decoded = decodeCommitRecord(bytes, sizeof bytes);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded.value().layers.end, 32u);
  EXPECT_EQ(decoded.value().block_hash, 0xabcdefu);
  for (size_t i = 0; i < sizeof bytes; ++i) {
    uint8_t forged[CommitRecord::kBytes];
    std::copy(bytes, bytes + sizeof bytes, forged);
    forged[i] ^= 0x01;
    EXPECT_FALSE(decodeCommitRecord(forged, sizeof forged).ok()) << "byte " << i;
  }
}

TEST(CommitRecord, OlderFormatIsUnsupportedNotCorrupt) {
  const uint8_t v1[12] = {'K', 'V', 'D', 'C', 1, 0, 0, 0, 4, 0, 0, 0};
  EXPECT_EQ(decodeCommitRecord(v1, sizeof v1).status().code(), StatusCode::kUnsupported);
}

class LookupTest : public ::testing::Test {
 protected:
  // Stores layers `layers` of block `hash`: a MemoryStore publishes no record over layers it lacks.
  void holdLayers(const KeySpace& keys, uint64_t hash, LayerRange layers) {
    const uint8_t value[8] = {};
    for (uint32_t l = layers.begin; l < layers.end; ++l) {
      ASSERT_TRUE(store->put(blockKey(keys, hash, l), {value, sizeof value}).ok());
    }
  }

  std::shared_ptr<MemoryStore> store = std::make_shared<MemoryStore>(size_t{1} << 20);
  KeySpace space{"model-a", 0, 1};
};

TEST_F(LookupTest, CountsThePublishedPrefixInOneBatchedRead) {
  holdLayers(space, 1, {0, 4});
  holdLayers(space, 2, {0, 4});
  ASSERT_TRUE(publishCommits(*store, space, {1, 2}, {0, 4}).ok());
  EXPECT_EQ(lookupCommitted(*store, space, {1, 2, 3}, {0, 4}).value(), 2u);
  EXPECT_EQ(lookupCommitted(*store, space, {1, 2}, {0, 8}).value(), 0u);  // fewer layers than needed
  EXPECT_EQ(lookupCommitted(*store, space, {1, 2}, {0, 0}).value(), 2u);  // any whole-model record
  EXPECT_EQ(lookupCommitted(*store, space, {3, 1}, {0, 4}).value(), 0u);
}

TEST_F(LookupTest, AStageIsCoveredByItsOwnRecordOrAWholeModelOne) {
  holdLayers(space, 1, {16, 32});
  holdLayers(space, 2, {0, 32});
  ASSERT_TRUE(publishCommits(*store, space, {1}, {16, 32}).ok());
  ASSERT_TRUE(publishCommits(*store, space, {2}, {0, 32}).ok());
  EXPECT_EQ(lookupCommitted(*store, space, {1, 2}, {16, 32}).value(), 2u);
  EXPECT_EQ(lookupCommitted(*store, space, {1}, {0, 32}).value(), 0u);
}

TEST_F(LookupTest, ARecordFromAnotherKeySpaceIsAnErrorNamingItsKey) {
  KeySpace other{"model-b", 0, 1};
  holdLayers(other, 1, {0, 4});
  holdLayers(space, 1, {0, 4});
  ASSERT_TRUE(publishCommits(*store, other, {1}, {0, 4}).ok());
  auto value = store->get(commitKey(other, 1));
  ASSERT_TRUE(value.ok());
  ASSERT_TRUE(store->put(commitKey(space, 1), {value.value().data(), value.value().size()}).ok());
  auto found = lookupCommitted(*store, space, {1}, {0, 4});
  EXPECT_EQ(found.status().code(), StatusCode::kKeySpaceMismatch);
  EXPECT_EQ(found.status().key(), commitKey(space, 1));
}

TEST_F(LookupTest, AForgedOrMisplacedRecordIsAnErrorNamingItsKey) {
  holdLayers(space, 1, {0, 5});
  uint8_t bytes[CommitRecord::kBytes];
  encodeCommitRecord(CommitRecord{{0, 5}, keySpaceFingerprint(space), 1}, bytes);
  bytes[12] = 6;  // claims one more layer without fixing the checksum
  ASSERT_TRUE(store->put(commitKey(space, 1), {bytes, sizeof bytes}).ok());
  EXPECT_EQ(lookupCommitted(*store, space, {1}, {0, 5}).status().code(), StatusCode::kChecksumMismatch);

  encodeCommitRecord(CommitRecord{{0, 5}, keySpaceFingerprint(space), 2}, bytes);  // block 2's record under 1's key
  ASSERT_TRUE(store->put(commitKey(space, 1), {bytes, sizeof bytes}).ok());
  auto found = lookupCommitted(*store, space, {1}, {0, 5});
  EXPECT_EQ(found.status().code(), StatusCode::kChecksumMismatch);
  EXPECT_EQ(found.status().key(), commitKey(space, 1));
}

class CommitClaimsTest : public ::testing::Test {
 protected:
  // Puts a (content-free) record under `key`, as a finisher's publish would.
  void publish(const std::string& key) {
    const uint8_t value[1] = {1};
    ASSERT_TRUE(store->put(key, {value, sizeof value}).ok()) << key;
  }
  bool present(const std::string& key) { return store->exists(key).value(); }

  std::shared_ptr<MemoryStore> store = std::make_shared<MemoryStore>(size_t{1} << 16);
  CommitClaims claims;
};

TEST_F(CommitClaimsTest, AnAbandonedCommitTakesBackWhatItStillOwns) {
  TaskControl control;
  const std::vector<std::string> keys = {"a/commit", "b/commit"};
  ASSERT_TRUE(claims.claim(kCycle, keys, control));
  for (const auto& k : keys) publish(k);
  ASSERT_TRUE(claims.retract(*store, kCycle, {"a/commit", "b/commit", "never/put"}).ok());
  EXPECT_FALSE(present("a/commit"));
  EXPECT_FALSE(present("b/commit"));
  claims.release(kCycle, keys);
  EXPECT_EQ(claims.size(), 0u);
}

TEST_F(CommitClaimsTest, ALaterCyclesRecordUnderTheSameKeyIsKept) {
  TaskControl stalled, retry;
  ASSERT_TRUE(claims.claim(kCycle, {"a/commit", "b/commit"}, stalled));  // its put stalls; abort() gives it up
  ASSERT_TRUE(claims.claim(kCycle + 1, {"b/commit"}, retry));             // the retry publishes b's record
  publish("b/commit");
  claims.release(kCycle + 1, {"b/commit"});
  EXPECT_EQ(claims.size(), 1u);  // a/commit, still the abandoned commit's
  publish("a/commit");           // the stalled put lands after all
  ASSERT_TRUE(claims.retract(*store, kCycle, {"a/commit", "b/commit"}).ok());
  EXPECT_FALSE(present("a/commit"));
  EXPECT_TRUE(present("b/commit"));
  claims.release(kCycle, {"a/commit", "b/commit"});
  EXPECT_EQ(claims.size(), 0u);
}

TEST_F(CommitClaimsTest, AnAbandonedFinisherClaimsNothing) {
  TaskControl late, retry;
  ASSERT_TRUE(claims.claim(kCycle + 1, {"b/commit"}, retry));
  publish("b/commit");
  // The earlier cycle's finisher, given up by abort() before it claimed, comes back.
  late.abandon();
  EXPECT_FALSE(claims.claim(kCycle, {"b/commit"}, late));
  ASSERT_TRUE(claims.retract(*store, kCycle, {"b/commit"}).ok());
  EXPECT_TRUE(present("b/commit"));
  claims.release(kCycle + 1, {"b/commit"});
  EXPECT_EQ(claims.size(), 0u);
}

TEST(KeySpace, ValidationNamesTheBadField) {
  EXPECT_NE(validateKeySpace({"a/b", 0, 1}).message().find("namespace"), std::string::npos);
  EXPECT_NE(validateKeySpace({"a b", 0, 1}).message().find("namespace"), std::string::npos);
  EXPECT_NE(validateKeySpace({"ok", 0, 70000}).message().find("tp_size"), std::string::npos);
  EXPECT_NE(validateKeySpace({"ok", 2, 2}).message().find("tp_rank"), std::string::npos);
  EXPECT_TRUE(validateKeySpace({"ok", 1, 2}).ok());
  EXPECT_NE(keySpaceFingerprint({"a", 0, 2}), keySpaceFingerprint({"a", 1, 2}));
  EXPECT_NE(keySpaceFingerprint({"ab", 0, 1}), keySpaceFingerprint({"a", 0, 1}));
}

}  // namespace
}  // namespace kvdump

// The stored block format: header round trip, checksum verification, and mismatch reporting.
#include "kvdump/block_format.h"

#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_SCALAR
#include <xxhash.h>

#include <gtest/gtest.h>

#include <vector>

#include "kvdump/block_key.h"

namespace kvdump {
namespace {

// Fills `h`'s payload (payload_bytes as its layout and shape imply), checksums it and encodes the
// header in front of it.
std::vector<uint8_t> sealRecord(BlockHeader& h, uint8_t salt) {
  h.payload_bytes = h.expectedPayloadBytes();
  std::vector<uint8_t> record(BlockHeader::kBytes + h.payload_bytes);
  for (size_t i = BlockHeader::kBytes; i < record.size(); ++i) record[i] = static_cast<uint8_t>(i * salt);
  h.checksum = payloadChecksum(record.data() + BlockHeader::kBytes, h.payload_bytes);
  encodeBlockHeader(h, record.data());
  return record;
}

std::vector<uint8_t> makeRecord(BlockHeader* header_out) {
  BlockHeader h;
  h.dtype = BlockDtype::kBFloat16;
  h.layer = 7;
  h.block_size = 4;
  h.num_kv_heads = 2;
  h.head_dim = 3;
  h.tp_rank = 1;
  h.tp_size = 2;
  h.block_hash = 0xfeedfacecafebeefULL;
  auto record = sealRecord(h, 7);
  EXPECT_EQ(h.payload_bytes, uint64_t{2 * 4 * 2 * 3 * 2});  // K then V of bf16
  *header_out = h;
  return record;
}

TEST(BlockFormat, HeaderRoundTrips) {
  BlockHeader h;
  auto record = makeRecord(&h);
  EXPECT_EQ(std::string(record.begin(), record.begin() + 4), "KVDB");
  auto decoded = decodeBlockRecord(record.data(), record.size());
  ASSERT_TRUE(decoded.ok()) << decoded.status().toString();
  EXPECT_EQ(decoded.value().layer, 7u);
  EXPECT_EQ(decoded.value().block_hash, h.block_hash);
  EXPECT_EQ(decoded.value().dtype, BlockDtype::kBFloat16);
  EXPECT_EQ(decoded.value().tp_size, 2);
  EXPECT_TRUE(checkBlockMatches(decoded.value(), h).ok());
}

TEST(BlockFormat, FlippedPayloadByteIsChecksumMismatch) {
  BlockHeader h;
  auto record = makeRecord(&h);
  record[BlockHeader::kBytes + 5] ^= 0x01;
  EXPECT_EQ(decodeBlockRecord(record.data(), record.size()).status().code(), StatusCode::kChecksumMismatch);
}

TEST(BlockFormat, TruncatedOrForeignValuesAreRejected) {
  BlockHeader h;
  auto record = makeRecord(&h);
  EXPECT_EQ(decodeBlockRecord(record.data(), record.size() - 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(decodeBlockRecord(record.data(), 10).status().code(), StatusCode::kInvalidArgument);
  record[0] = 'X';
  EXPECT_EQ(decodeBlockRecord(record.data(), record.size()).status().code(), StatusCode::kInvalidArgument);
}

TEST(BlockFormat, NewerVersionIsUnsupported) {
  BlockHeader h;
  auto record = makeRecord(&h);
  record[4] = 9;
  EXPECT_EQ(decodeBlockRecord(record.data(), record.size()).status().code(), StatusCode::kUnsupported);
}

TEST(BlockFormat, MismatchNamesTheField) {
  BlockHeader h;
  makeRecord(&h);
  BlockHeader other = h;
  other.head_dim = 4;
  Status s = checkBlockMatches(h, other);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("head_dim"), std::string::npos);
  other = h;
  other.dtype = BlockDtype::kFloat16;
  EXPECT_NE(checkBlockMatches(h, other).message().find("bfloat16"), std::string::npos);
}

// An MLA latent block: one part of [block_size, head_dim] under num_kv_heads 1, no V.
std::vector<uint8_t> makeLatentRecord(BlockHeader* header_out) {
  BlockHeader h;
  h.dtype = BlockDtype::kFloat16;
  h.layout = BlockLayout::kLatent;
  h.layer = 3;
  h.block_size = 4;
  h.num_kv_heads = 1;
  h.head_dim = 9;
  h.block_hash = 0x1234;
  auto record = sealRecord(h, 13);
  *header_out = h;
  return record;
}

TEST(BlockFormat, LatentRecordRoundTripsWithOnePart) {
  BlockHeader h;
  auto record = makeLatentRecord(&h);
  EXPECT_EQ(record[10], 1);  // the layout field, little-endian
  EXPECT_EQ(record[11], 0);
  auto decoded = decodeBlockRecord(record.data(), record.size());
  ASSERT_TRUE(decoded.ok()) << decoded.status().toString();
  EXPECT_EQ(decoded.value().layout, BlockLayout::kLatent);
  EXPECT_EQ(decoded.value().payload_bytes, uint64_t{4 * 9 * 2});
  EXPECT_EQ(decoded.value().expectedPayloadBytes(), decoded.value().payload_bytes);
  EXPECT_TRUE(checkBlockMatches(decoded.value(), h).ok());
}

TEST(BlockFormat, LatentRecordWithAKeyValueSizedPayloadIsRefused) {
  BlockHeader h;
  makeLatentRecord(&h);
  h.payload_bytes *= 2;  // what K then V of the same shape would hold
  std::vector<uint8_t> record(BlockHeader::kBytes + h.payload_bytes, 0x5a);
  h.checksum = payloadChecksum(record.data() + BlockHeader::kBytes, h.payload_bytes);
  encodeBlockHeader(h, record.data());
  EXPECT_EQ(decodeBlockRecord(record.data(), record.size()).status().code(), StatusCode::kInvalidArgument);
}

TEST(BlockFormat, ZeroReservedFieldStillReadsAsKeyThenValue) {
  BlockHeader h;
  auto record = makeRecord(&h);
  // Records stored before the layout field had these bytes reserved and 0.
  ASSERT_EQ(record[10], 0);
  ASSERT_EQ(record[11], 0);
  auto decoded = decodeBlockRecord(record.data(), record.size());
  ASSERT_TRUE(decoded.ok()) << decoded.status().toString();
  EXPECT_EQ(decoded.value().layout, BlockLayout::kKeyValue);
  EXPECT_EQ(blockLayoutParts(decoded.value().layout), 2u);
  EXPECT_EQ(decoded.value().payload_bytes, 2 * decoded.value().partBytes());
}

TEST(BlockFormat, UnknownLayoutCodeIsRefused) {
  BlockHeader h;
  auto record = makeRecord(&h);
  record[10] = 7;
  Status s = decodeBlockRecord(record.data(), record.size()).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("layout"), std::string::npos);
}

TEST(BlockFormat, LayoutMismatchIsRefusedNamingTheField) {
  BlockHeader latent;
  makeLatentRecord(&latent);
  // Same dtype and shape, one head: only the number of parts tells them apart.
  BlockHeader key_value = latent;
  key_value.layout = BlockLayout::kKeyValue;
  key_value.payload_bytes = 2 * latent.payload_bytes;
  for (const auto& [found, expected] : {std::pair{latent, key_value}, std::pair{key_value, latent}}) {
    Status s = checkBlockMatches(found, expected);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("layout"), std::string::npos) << s.message();
  }
}

TEST(BlockKey, NamesNamespaceShardHashAndLayer) {
  KeySpace space{"llama-8b", 1, 4};
  EXPECT_EQ(blockKey(space, 0xabcULL, 12), "llama-8b/tp1of4/0000000000000abc/L12");
  EXPECT_EQ(commitKey(space, 0xabcULL), "llama-8b/tp1of4/0000000000000abc/commit");
  // A negative int64 hash from Python is the same 64 bits.
  EXPECT_EQ(blockKey(space, static_cast<uint64_t>(int64_t{-1}), 0), "llama-8b/tp1of4/ffffffffffffffff/L0");
}

}  // namespace
}  // namespace kvdump

namespace kvdump {
namespace {

uint64_t portableXxh3(const void* data, size_t size) { return XXH3_64bits(data, size); }

// Whichever build of XXH3 the CPU gets, a stored checksum must mean the same thing everywhere: the
// dispatched checksum equals the portable one for every length and alignment.
TEST(PayloadChecksum, EqualsPortableXxh3ForEveryLengthAndAlignment) {
  std::vector<uint8_t> bytes(70000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 131 + (i >> 7));
  for (size_t size : {size_t{0}, size_t{1}, size_t{16}, size_t{17}, size_t{128}, size_t{129}, size_t{240},
                      size_t{241}, size_t{1024}, size_t{4097}, size_t{65536}, size_t{65600}}) {
    for (size_t offset : {size_t{0}, size_t{1}, size_t{7}}) {
      EXPECT_EQ(payloadChecksum(bytes.data() + offset, size), portableXxh3(bytes.data() + offset, size))
          << size << " at +" << offset;
    }
  }
}

}  // namespace
}  // namespace kvdump

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
  h.payload_bytes = 2 * 4 * 2 * 3 * 2;
  std::vector<uint8_t> record(BlockHeader::kBytes + h.payload_bytes);
  for (size_t i = BlockHeader::kBytes; i < record.size(); ++i) record[i] = static_cast<uint8_t>(i * 7);
  h.checksum = payloadChecksum(record.data() + BlockHeader::kBytes, h.payload_bytes);
  encodeBlockHeader(h, record.data());
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

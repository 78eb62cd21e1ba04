// The stored byte layout of one KV block: a 64-byte header, then its parts: K then V, or one MLA
// latent part (docs/design.md §3).
// Device-neutral: little-endian integers, raw little-endian element bytes, no padding or strides,
// so a block written from one device type can be loaded onto another.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kvdump/status.h"

namespace kvdump {

/// Element types a block can hold; the numbers are part of the stored format and never change.
enum class BlockDtype : uint8_t {
  kFloat32 = 1,
  kFloat16 = 2,
  kBFloat16 = 3,
  kFloat64 = 4,
  kFloat8E4M3 = 5,
  kFloat8E5M2 = 6,
};

/// How a block's payload is split into parts (a plain value); the numbers are part of the stored
/// format and never change. 0 is what every record before latent caches holds in that field (it was
/// reserved, 0), so those records still read as K then V.
enum class BlockLayout : uint16_t {
  kKeyValue = 0,  // K then V, each [block_size, num_kv_heads, head_dim]
  kLatent = 1,    // one MLA latent part [block_size, head_dim], stored with num_kv_heads 1
};

/// Parts of a block's payload under `layout` (2 for K then V, 1 for latent); 0 for an unknown value. Pure.
size_t blockLayoutParts(BlockLayout layout);
/// `layout` in words for error messages: a static string, never freed. Pure.
const char* blockLayoutName(BlockLayout layout);

/// Bytes per element of `dtype`; 0 for an unknown value.
size_t blockDtypeSize(BlockDtype dtype);
const char* blockDtypeName(BlockDtype dtype);

/// The decoded header of a stored block; a plain value.
///   offset size field
///        0    4 magic "KVDB"
///        4    2 format version (2; version 1 had no key-space fingerprint and is refused)
///        6    2 header bytes (64)
///        8    1 dtype (BlockDtype)
///        9    1 element bytes
///       10    2 layout (BlockLayout: 0 = K then V, 1 = one latent part; reserved and 0 before)
///       12    4 layer
///       16    4 block_size (tokens)
///       20    4 num_kv_heads
///       24    4 head_dim
///       28    2 tp_rank
///       30    2 tp_size
///       32    8 block hash
///       40    8 payload bytes (= parts * block_size * num_kv_heads * head_dim * element bytes)
///       48    8 XXH3-64 checksum of the payload
///       56    8 key-space fingerprint (keySpaceFingerprint of the writer's namespace and TP layout)
struct BlockHeader {
  static constexpr size_t kBytes = 64;
  static constexpr uint16_t kVersion = 2;

  BlockDtype dtype = BlockDtype::kFloat32;
  BlockLayout layout = BlockLayout::kKeyValue;
  uint32_t layer = 0;
  uint32_t block_size = 0;
  uint32_t num_kv_heads = 0;
  uint32_t head_dim = 0;
  uint16_t tp_rank = 0;
  uint16_t tp_size = 1;
  uint64_t block_hash = 0;
  uint64_t payload_bytes = 0;
  uint64_t checksum = 0;
  uint64_t key_space = 0;

  /// Bytes of one part (K, V, or the latent) as the shape fields give it; 0 for an unknown dtype.
  uint64_t partBytes() const {
    return uint64_t{block_size} * num_kv_heads * head_dim * blockDtypeSize(dtype);
  }
  /// The payload bytes the layout and shape fields imply (what payload_bytes must be).
  uint64_t expectedPayloadBytes() const { return blockLayoutParts(layout) * partBytes(); }
};

/// XXH3-64 of `size` bytes; thread-safe, pure.
uint64_t payloadChecksum(const void* data, size_t size);

/// Writes `header` into the first kBytes of `out`. Pure.
void encodeBlockHeader(const BlockHeader& header, uint8_t* out);

/// Parses and checks a stored record (header + payload): magic, version, sizes, and the checksum.
/// INVALID_ARGUMENT for a malformed record, CHECKSUM_MISMATCH when the payload is corrupt. Pure.
Result<BlockHeader> decodeBlockRecord(const uint8_t* record, size_t record_bytes);

/// KEY_SPACE_MISMATCH when `found` was written under another key space; otherwise INVALID_ARGUMENT
/// naming the first field where it differs from `expected` (layout, dtype, shape, layer, hash,
/// TP); the checksum and payload size are not compared. Pure.
Status checkBlockMatches(const BlockHeader& found, const BlockHeader& expected);

}  // namespace kvdump

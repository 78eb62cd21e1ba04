#include "kvdump/block_format.h"

#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "little_endian.h"
#include "payload_checksum_avx2.h"

namespace kvdump {
namespace {

constexpr uint8_t kMagic[4] = {'K', 'V', 'D', 'B'};

}  // namespace

size_t blockLayoutParts(BlockLayout layout) {
  switch (layout) {
    case BlockLayout::kKeyValue: return 2;
    case BlockLayout::kLatent: return 1;
  }
  return 0;
}

const char* blockLayoutName(BlockLayout layout) {
  switch (layout) {
    case BlockLayout::kKeyValue: return "K then V (2 parts)";
    case BlockLayout::kLatent: return "latent (1 part)";
  }
  return "unknown";
}

size_t blockDtypeSize(BlockDtype dtype) {
  switch (dtype) {
    case BlockDtype::kFloat32: return 4;
    case BlockDtype::kFloat16: return 2;
    case BlockDtype::kBFloat16: return 2;
    case BlockDtype::kFloat64: return 8;
    case BlockDtype::kFloat8E4M3: return 1;
    case BlockDtype::kFloat8E5M2: return 1;
  }
  return 0;
}

const char* blockDtypeName(BlockDtype dtype) {
  switch (dtype) {
    case BlockDtype::kFloat32: return "float32";
    case BlockDtype::kFloat16: return "float16";
    case BlockDtype::kBFloat16: return "bfloat16";
    case BlockDtype::kFloat64: return "float64";
    case BlockDtype::kFloat8E4M3: return "float8_e4m3fn";
    case BlockDtype::kFloat8E5M2: return "float8_e5m2";
  }
  return "unknown";
}

uint64_t payloadChecksum(const void* data, size_t size) {
#ifdef KVDUMP_HAVE_AVX2_CHECKSUM
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return payloadChecksumAvx2(data, size);
#endif
  return XXH3_64bits(data, size);
}

void encodeBlockHeader(const BlockHeader& h, uint8_t* out) {
  std::memset(out, 0, BlockHeader::kBytes);
  std::memcpy(out, kMagic, 4);
  putField<uint16_t>(out, 4, BlockHeader::kVersion);
  putField<uint16_t>(out, 6, static_cast<uint16_t>(BlockHeader::kBytes));
  putField<uint8_t>(out, 8, static_cast<uint8_t>(h.dtype));
  putField<uint8_t>(out, 9, static_cast<uint8_t>(blockDtypeSize(h.dtype)));
  putField<uint16_t>(out, 10, static_cast<uint16_t>(h.layout));
  putField<uint32_t>(out, 12, h.layer);
  putField<uint32_t>(out, 16, h.block_size);
  putField<uint32_t>(out, 20, h.num_kv_heads);
  putField<uint32_t>(out, 24, h.head_dim);
  putField<uint16_t>(out, 28, h.tp_rank);
  putField<uint16_t>(out, 30, h.tp_size);
  putField<uint64_t>(out, 32, h.block_hash);
  putField<uint64_t>(out, 40, h.payload_bytes);
  putField<uint64_t>(out, 48, h.checksum);
  putField<uint64_t>(out, 56, h.key_space);
}

Result<BlockHeader> decodeBlockRecord(const uint8_t* record, size_t record_bytes) {
  if (record_bytes < BlockHeader::kBytes) {
    return Status::InvalidArgument("stored block of " + std::to_string(record_bytes) + " bytes is shorter than its header");
  }
  if (std::memcmp(record, kMagic, 4) != 0) return Status::InvalidArgument("stored value is not a kvdump block (bad magic)");
  const auto version = takeField<uint16_t>(record, 4);
  if (version != BlockHeader::kVersion) {
    return Status::Unsupported("stored block has format version " + std::to_string(version) + ", this kvdump reads " +
                               std::to_string(BlockHeader::kVersion) +
                               "; re-create the store or re-run prefill into an empty one");
  }
  if (takeField<uint16_t>(record, 6) != BlockHeader::kBytes) return Status::InvalidArgument("stored block has a bad header size");
  BlockHeader h;
  h.dtype = static_cast<BlockDtype>(takeField<uint8_t>(record, 8));
  const size_t element = blockDtypeSize(h.dtype);
  if (element == 0 || takeField<uint8_t>(record, 9) != element) {
    return Status::InvalidArgument("stored block has an unknown dtype code " + std::to_string(takeField<uint8_t>(record, 8)));
  }
  h.layout = static_cast<BlockLayout>(takeField<uint16_t>(record, 10));
  if (blockLayoutParts(h.layout) == 0) {
    return Status::InvalidArgument("stored block has an unknown layout code " +
                                   std::to_string(takeField<uint16_t>(record, 10)));
  }
  h.layer = takeField<uint32_t>(record, 12);
  h.block_size = takeField<uint32_t>(record, 16);
  h.num_kv_heads = takeField<uint32_t>(record, 20);
  h.head_dim = takeField<uint32_t>(record, 24);
  h.tp_rank = takeField<uint16_t>(record, 28);
  h.tp_size = takeField<uint16_t>(record, 30);
  h.block_hash = takeField<uint64_t>(record, 32);
  h.payload_bytes = takeField<uint64_t>(record, 40);
  h.checksum = takeField<uint64_t>(record, 48);
  h.key_space = takeField<uint64_t>(record, 56);
  if (h.payload_bytes != h.expectedPayloadBytes() || record_bytes != BlockHeader::kBytes + h.payload_bytes) {
    return Status::InvalidArgument("stored block is truncated or its header disagrees with its size (" +
                                   std::to_string(record_bytes) + " bytes, header says payload " +
                                   std::to_string(h.payload_bytes) + ")");
  }
  const uint64_t actual = payloadChecksum(record + BlockHeader::kBytes, h.payload_bytes);
  if (actual != h.checksum) {
    return Status::ChecksumMismatch("stored block payload is corrupt: checksum " + std::to_string(actual) +
                                    " != recorded " + std::to_string(h.checksum));
  }
  return h;
}

Status checkBlockMatches(const BlockHeader& found, const BlockHeader& expected) {
  auto mismatch = [](const char* field, uint64_t f, uint64_t e) {
    return Status::InvalidArgument(std::string("stored block does not match the destination cache: ") + field +
                                   " is " + std::to_string(f) + ", expected " + std::to_string(e));
  };
  if (found.key_space != expected.key_space) {
    return Status::KeySpaceMismatch(
        "stored block belongs to another key space (namespace or TP layout) than the reader's: it was copied or "
        "renamed from elsewhere");
  }
  // Before dtype and shape: a latent record and a K/V one can agree on both (num_kv_heads 1) and
  // differ only in how many parts the payload holds.
  if (found.layout != expected.layout) {
    return Status::InvalidArgument(std::string("stored block does not match the destination cache: layout is ") +
                                   blockLayoutName(found.layout) + ", expected " + blockLayoutName(expected.layout));
  }
  if (found.dtype != expected.dtype) {
    return Status::InvalidArgument(std::string("stored block dtype is ") + blockDtypeName(found.dtype) +
                                   ", the destination cache is " + blockDtypeName(expected.dtype));
  }
  if (found.block_size != expected.block_size) return mismatch("block_size", found.block_size, expected.block_size);
  if (found.num_kv_heads != expected.num_kv_heads) return mismatch("num_kv_heads", found.num_kv_heads, expected.num_kv_heads);
  if (found.head_dim != expected.head_dim) return mismatch("head_dim", found.head_dim, expected.head_dim);
  if (found.layer != expected.layer) return mismatch("layer", found.layer, expected.layer);
  if (found.block_hash != expected.block_hash) return mismatch("block hash", found.block_hash, expected.block_hash);
  if (found.tp_rank != expected.tp_rank || found.tp_size != expected.tp_size) {
    return mismatch("tp_rank", found.tp_rank, expected.tp_rank);
  }
  return Status::Ok();
}

}  // namespace kvdump

// Validation and description of a layer's paged KV cache as the ops accept it.
#pragma once

#include <ATen/ATen.h>

#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kvdump/block_format.h"
#include "kvdump/block_key.h"
#include "kvdump/status.h"

namespace kvdump {

/// A validated layer cache on one device with one floating dtype: K and V each [num_blocks,
/// block_size, num_kv_heads, head_dim], or one MLA latent part [num_blocks, block_size, head_dim]
/// (seen as one head of head_dim, no V). Keeps the caller's memory alive through its storages, not
/// its tensors: a tensor the caller also holds in Python would make the worker that drops it take
/// the GIL, while a storage reference is a plain atomic count. Parts are described by base pointers
/// and strides, so validating a call makes no tensor views; part() builds them for the workers that
/// need them. A plain value; not thread-safe.
struct LayerKv {
  // Each part's storage; storage[1] is set only when V came as its own tensor.
  c10::Storage storage[2];
  int64_t storage_offset[2] = {0, 0};  // elements from the start of the part's storage to its block 0
  const void* storage_data[2] = {nullptr, nullptr};  // each storage's memory when captured
  size_t storage_bytes[2] = {0, 0};                  // and its size then
  int64_t part_strides[2][4] = {};     // element strides of each part seen as [num_blocks, block_size, heads, head_dim]
  at::ScalarType scalar_type = at::kFloat;
  c10::Device device_at{c10::kCPU};
  BlockDtype dtype = BlockDtype::kFloat32;
  BlockLayout layout = BlockLayout::kKeyValue;
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t num_kv_heads = 0;  // 1 for a latent cache
  int64_t head_dim = 0;      // the latent width (e.g. 576) for a latent cache
  uint8_t* part_data[2] = {nullptr, nullptr};  // first byte of block 0 of each part (a device address off the CPU)
  int64_t part_block_stride[2] = {0, 0};       // bytes from one block of a part to the next
  bool dense = false;  // on the CPU with every block of every part one run of bytes (the memcpy path)

  /// Parts per block in the stored record, in payload order: 2 (K, V) or 1 (latent).
  size_t parts() const { return blockLayoutParts(layout); }
  /// Part `p` (0 = K or the latent, 1 = V) as a new [num_blocks, block_size, heads, head_dim]
  /// tensor over the caller's storage; for the worker that gathers or scatters with tensor ops.
  at::Tensor part(size_t p) const;
  c10::Device device() const { return device_at; }
  at::ScalarType scalarType() const { return scalar_type; }
  /// Drops the references to the caller's memory.
  void release();
  /// INVALID_ARGUMENT when a storage no longer holds the memory it held when captured (the caller
  /// resized it, or swapped its memory out): the part pointers would then point at freed memory.
  Status memoryUnchanged() const;
  /// Bytes of one part of one block.
  size_t partBytes() const;
  /// Bytes of one stored record: header + every part.
  size_t recordBytes() const { return BlockHeader::kBytes + parts() * partBytes(); }
  /// True when every block of every part is one dense run of bytes (the memcpy fast path).
  bool blocksAreDense() const { return dense; }
  /// The header a block of this layer is stored with (checksum left 0).
  BlockHeader headerFor(uint32_t layer, uint64_t hash, const KeySpace& space, uint64_t fingerprint) const;
};

/// Host block ids (or hashes) of one call, inline up to 64 blocks (1 Ki tokens of 16-token blocks)
/// so that capturing them costs no allocation of its own; a larger call allocates one array each.
using BlockIds = c10::SmallVector<int64_t, 64>;
using BlockHashes = c10::SmallVector<uint64_t, 64>;

/// Accepts one [2, num_blocks, block_size, heads, head_dim] tensor (K then V), separate K and V
/// tensors of [num_blocks, block_size, heads, head_dim], or one MLA latent tensor [num_blocks,
/// block_size, head_size] with no V. INVALID_ARGUMENT naming the problem.
Result<LayerKv> describeLayerKv(const at::Tensor& kv_or_k, const std::optional<at::Tensor>& v);

/// Block ids as host int64s into `out`: a 1-D CPU integer tensor, each in [0, num_blocks).
Status hostBlockIds(const at::Tensor& ids, int64_t num_blocks, BlockIds& out);

/// Block hashes as host uint64s into `out`: a 1-D CPU int64 tensor of `expected` entries.
Status hostBlockHashes(const at::Tensor& hashes, size_t expected, BlockHashes& out);

/// A layer op's cache and block arguments, validated into `kv`, `ids` and `hashes` (the checks of
/// describeLayerKv, hostBlockIds and hostBlockHashes, in that order); the first failure otherwise.
Status describeLayerCall(const at::Tensor& kv_cache, const std::optional<at::Tensor>& v_cache,
                         const at::Tensor& block_ids, const at::Tensor& block_hashes, LayerKv& kv, BlockIds& ids,
                         BlockHashes& hashes);

/// INVALID_ARGUMENT naming `what` and both positions when two entries of `values` are equal. Pure.
/// Hashes every entry into a bitmap on the stack first: distinct entries, the common case, cost one
/// pass and no allocation; only a bitmap collision pays for the exact check (a sort).
template <typename Values>
Status checkDistinct(const Values& values, const char* what) {
  using T = std::decay_t<decltype(values[0])>;
  if (values.size() < 2) return Status::Ok();
  constexpr size_t kBits = 4096;
  if (values.size() <= kBits / 8) {
    uint64_t seen[kBits / 64] = {};
    bool collided = false;
    for (size_t i = 0; i < values.size() && !collided; ++i) {
      const uint64_t bit = (static_cast<uint64_t>(values[i]) * 0x9E3779B97F4A7C15ull) >> 52;  // 12 bits
      collided = (seen[bit / 64] >> (bit % 64)) & 1u;
      seen[bit / 64] |= uint64_t{1} << (bit % 64);
    }
    if (!collided) return Status::Ok();
  }
  c10::SmallVector<std::pair<T, size_t>, 64> sorted(values.size());
  for (size_t i = 0; i < values.size(); ++i) sorted[i] = {values[i], i};
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i].first != sorted[i - 1].first) continue;
    const auto [a, b] = std::minmax(sorted[i - 1].second, sorted[i].second);
    return Status::InvalidArgument(std::string(what) + "[" + std::to_string(b) + "] repeats " + what + "[" +
                                   std::to_string(a) + "] (" + std::to_string(static_cast<int64_t>(sorted[i].first)) +
                                   "): each block may appear once per call");
  }
  return Status::Ok();
}

}  // namespace kvdump

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

/// A validated layer cache, K and V each [num_blocks, block_size, num_kv_heads, head_dim] on one
/// device with one floating dtype. Holds the caller's tensors by reference (refcounts) exactly as
/// passed: K and V are described by base pointers and strides, so validating a call makes no tensor
/// views; k()/v() build views for the workers that need them. A plain value; not thread-safe.
struct LayerKv {
  at::Tensor whole;    // the kv_cache argument: [2, num_blocks, ...] (K then V), or K alone
  at::Tensor v_alone;  // V when passed separately; undefined when `whole` holds both
  BlockDtype dtype = BlockDtype::kFloat32;
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  uint8_t* k_data = nullptr;  // first byte of K's block 0 (a device address off the CPU)
  uint8_t* v_data = nullptr;
  int64_t k_block_stride = 0;  // bytes from one block to the next
  int64_t v_block_stride = 0;
  bool dense = false;  // on the CPU with every block of K and of V one run of bytes (the memcpy path)

  /// K (V) as a [num_blocks, block_size, heads, head_dim] tensor: a view when `whole` holds both.
  at::Tensor k() const;
  at::Tensor v() const;
  c10::Device device() const { return whole.device(); }
  at::ScalarType scalarType() const { return whole.scalar_type(); }
  /// Drops the references to the caller's tensors.
  void release();
  /// Bytes of K (or V) in one block.
  size_t halfBytes() const;
  /// Bytes of one stored record: header + K + V.
  size_t recordBytes() const { return BlockHeader::kBytes + 2 * halfBytes(); }
  /// True when every block of K and of V is one dense run of bytes (the memcpy fast path).
  bool blocksAreDense() const { return dense; }
  /// The header a block of this layer is stored with (checksum left 0).
  BlockHeader headerFor(uint32_t layer, uint64_t hash, const KeySpace& space, uint64_t fingerprint) const;
};

/// Host block ids (or hashes) of one call, inline up to a typical prefill batch so that capturing
/// them costs no allocation of its own.
using BlockIds = c10::SmallVector<int64_t, 32>;
using BlockHashes = c10::SmallVector<uint64_t, 32>;

/// Accepts either one [2, num_blocks, block_size, heads, head_dim] tensor (K then V) or separate K
/// and V tensors of [num_blocks, block_size, heads, head_dim]. INVALID_ARGUMENT naming the problem.
Result<LayerKv> describeLayerKv(const at::Tensor& kv_or_k, const std::optional<at::Tensor>& v);

/// Block ids as host int64s into `out`: a 1-D CPU integer tensor, each in [0, num_blocks).
Status hostBlockIds(const at::Tensor& ids, int64_t num_blocks, BlockIds& out);

/// Block hashes as host uint64s into `out`: a 1-D CPU int64 tensor of `expected` entries.
Status hostBlockHashes(const at::Tensor& hashes, size_t expected, BlockHashes& out);

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

// Validation and description of a layer's paged KV cache as the ops accept it.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kvdump/block_format.h"
#include "kvdump/block_key.h"
#include "kvdump/status.h"

namespace kvdump {

/// A validated layer cache: K and V as [num_blocks, block_size, num_kv_heads, head_dim] tensors on one
/// device with one floating dtype. Holds tensor references (refcounts), not copies.
struct LayerKv {
  at::Tensor k;
  at::Tensor v;
  BlockDtype dtype = BlockDtype::kFloat32;
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;

  /// Bytes of K (or V) in one block.
  size_t halfBytes() const;
  /// Bytes of one stored record: header + K + V.
  size_t recordBytes() const { return BlockHeader::kBytes + 2 * halfBytes(); }
  /// True when every block of K and of V is one dense run of bytes (the memcpy fast path).
  bool blocksAreDense() const;
  /// The header a block of this layer is stored with (checksum left 0).
  BlockHeader headerFor(uint32_t layer, uint64_t hash, const KeySpace& space, uint64_t fingerprint) const;
};

/// Accepts either one [2, num_blocks, block_size, heads, head_dim] tensor (K then V) or separate K
/// and V tensors of [num_blocks, block_size, heads, head_dim]. INVALID_ARGUMENT naming the problem.
Result<LayerKv> describeLayerKv(const at::Tensor& kv_or_k, const std::optional<at::Tensor>& v);

/// Block ids as host int64s: a 1-D CPU integer tensor, each in [0, num_blocks).
Result<std::vector<int64_t>> hostBlockIds(const at::Tensor& ids, int64_t num_blocks);

/// Block hashes as host uint64s: a 1-D CPU int64 tensor of `expected` entries.
Result<std::vector<uint64_t>> hostBlockHashes(const at::Tensor& hashes, size_t expected);

/// INVALID_ARGUMENT naming `what` and both positions when two entries of `values` are equal. Pure.
template <typename T>
Status checkDistinct(const std::vector<T>& values, const char* what) {
  if (values.size() < 2) return Status::Ok();
  std::vector<std::pair<T, size_t>> sorted(values.size());
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

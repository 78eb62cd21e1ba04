#include "load_destination.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <utility>
#include <vector>

namespace kvdump {
namespace {

// Whether no two elements of a tensor with these sizes and strides share an address: true when,
// ordered by stride, each dimension steps past everything the smaller ones span. Sufficient, and it
// holds for every slice, permutation and dense layout; false leaves a doubt, which is refused.
bool provablyDisjoint(std::vector<std::pair<int64_t, int64_t>> dims) {  // (size, stride) in elements
  dims.erase(std::remove_if(dims.begin(), dims.end(), [](const auto& d) { return d.first <= 1; }), dims.end());
  for (auto& d : dims) d.second = std::llabs(d.second);
  std::sort(dims.begin(), dims.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  int64_t spanned = 1;  // elements the smaller dimensions reach, from one element
  for (const auto& [size, stride] : dims) {
    if (stride < spanned) return false;
    spanned = stride * (size - 1) + spanned;
  }
  return true;
}

std::vector<std::pair<int64_t, int64_t>> dimsOf(const at::Tensor& t) {
  std::vector<std::pair<int64_t, int64_t>> dims;
  for (int64_t d = 0; d < t.dim(); ++d) dims.emplace_back(t.size(d), t.stride(d));
  return dims;
}

bool disjoint(const at::Tensor& t) {
  const at::MemOverlap overlap = at::has_internal_overlap(t);
  return overlap == at::MemOverlap::No || (overlap == at::MemOverlap::TooHard && provablyDisjoint(dimsOf(t)));
}

// The bytes [first, last] a tensor's elements span.
std::pair<uintptr_t, uintptr_t> byteSpan(const at::Tensor& t) {
  int64_t reach = 0;
  for (int64_t d = 0; d < t.dim(); ++d) reach += (t.size(d) - 1) * std::llabs(t.stride(d));
  const auto first = reinterpret_cast<uintptr_t>(t.data_ptr());
  return {first, first + static_cast<uintptr_t>((reach + 1) * t.element_size()) - 1};
}

// Byte spans that do not meet are disjoint, whatever storages they belong to (memory shared through
// from_blob or DLPack is not one storage). Spans that meet are disjoint only as K and V of one
// storage with equal strides, seen as one tensor with a leading dimension of 2 stepping from one to
// the other: exact for K and V taken from one [2, ...] or [..., 2, ...] cache.
bool disjointFromEachOther(const at::Tensor& k, const at::Tensor& v) {
  if (k.numel() == 0 || v.numel() == 0) return true;
  const auto [k_first, k_last] = byteSpan(k);
  const auto [v_first, v_last] = byteSpan(v);
  if (k_last < v_first || v_last < k_first) return true;
  if (!k.is_alias_of(v) || k.strides() != v.strides()) return false;
  std::vector<std::pair<int64_t, int64_t>> dims = dimsOf(k);
  dims.emplace_back(2, v.storage_offset() - k.storage_offset());
  return v.storage_offset() != k.storage_offset() && provablyDisjoint(dims);
}

}  // namespace

Status checkLoadDestination(const at::Tensor& kv_cache, const std::optional<at::Tensor>& v_cache) {
  const bool separate = v_cache.has_value() && v_cache->defined();
  if (at::GradMode::is_enabled() && (kv_cache.requires_grad() || (separate && v_cache->requires_grad()))) {
    return Status::InvalidArgument(std::string(kv_cache.requires_grad() ? "kv_cache" : "v_cache") +
                                   " requires grad: a load writes it in place, which autograd does not record; "
                                   "load under torch.no_grad(), or into a cache that does not require grad");
  }
  if (!disjoint(kv_cache)) {
    return Status::InvalidArgument(
        "kv_cache has elements that share memory (an expanded or stride-0 view, or overlapping strides): "
        "a load would write one block or part over another");
  }
  if (separate && !disjoint(*v_cache)) {
    return Status::InvalidArgument(
        "v_cache has elements that share memory (an expanded or stride-0 view, or overlapping strides): "
        "a load would write one block over another");
  }
  if (separate && !disjointFromEachOther(kv_cache, *v_cache)) {
    return Status::InvalidArgument("k_cache and v_cache share memory: a load would write K over V or V over K");
  }
  return Status::Ok();
}

}  // namespace kvdump

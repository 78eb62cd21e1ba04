// What a load may write into: a cache whose every element has memory of its own, outside autograd.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "kvdump/status.h"

namespace kvdump {

/// INVALID_ARGUMENT naming the argument when a load into `kv_cache` (and `v_cache`) would write two
/// elements to one address (an expanded or stride-0 view, K and V over the same memory, blocks that
/// overlap), or when autograd would have to record the write (a cache that requires grad while grad
/// mode is on). Accepts every layout whose elements provably never share memory, dense or strided
/// (slices, permutations, K and V interleaved per block). Pure.
Status checkLoadDestination(const at::Tensor& kv_cache, const std::optional<at::Tensor>& v_cache);

}  // namespace kvdump

// The calling thread's share of a layer load, shared by the synchronous and the asynchronous op:
// validate the destination and the ids, then run the load here or queue it on the loader.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

#include "kvdump_ops/loader_context.h"

namespace kvdump {

/// Loads blocks `block_hashes` of `layer` into blocks `block_ids` of `kv_cache` (K and V, K with
/// `v_cache`, or a 3-D latent cache) on the calling thread, or raises a c10 error carrying the
/// Status (the first failure names its key). Thread-safe as the loader is.
void loadLayerNow(LoaderContext& loader, int64_t layer, const at::Tensor& kv_cache,
                  const std::optional<at::Tensor>& v_cache, const at::Tensor& block_ids,
                  const at::Tensor& block_hashes);

/// As loadLayerNow, but queued on the loader's open session: the loader's waitLayer(layer) reports
/// it. Bad arguments raise here, before anything is queued.
void queueLayerLoad(LoaderContext& loader, int64_t layer, const at::Tensor& kv_cache,
                    const std::optional<at::Tensor>& v_cache, const at::Tensor& block_ids,
                    const at::Tensor& block_hashes);

}  // namespace kvdump

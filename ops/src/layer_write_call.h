// The calling thread's whole share of a layer write, shared by the registered op and the direct
// Python entry: validate, take the cache's storage by reference, copy the ids and hashes (inline up
// to 64 blocks), record the device event, and queue one task. No views, no label text, and on the
// CPU one allocation up to 64 blocks (the task, which holds the LayerWrite by value), plus one for
// the label's copy of a request id too long to sit inline in a std::string (over 15 bytes); the
// task reads its request from its label.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>

#include "kvdump_ops/writer_context.h"

namespace kvdump {

/// `layer` as a layer index; INVALID_ARGUMENT (as a c10 error) unless it is a non-negative int32.
uint32_t requireLayer(int64_t layer);

/// Queues the write of blocks `block_ids` of `kv_cache` (K and V, K with `v_cache`, or a 3-D latent
/// cache) under keys made from `block_hashes`, or raises a c10 error carrying the Status (nothing
/// queued). Call on the thread that produced the tensors; thread-safe as the writer is. A wait for
/// queue space ends when `interrupted` (if any) returns true, as AsyncWriter::submit says.
void queueLayerWrite(WriterContext& ctx, int64_t layer, const at::Tensor& kv_cache,
                     const std::optional<at::Tensor>& v_cache, const at::Tensor& block_ids,
                     const at::Tensor& block_hashes, std::string_view request,
                     const std::function<bool()>& interrupted = {});

}  // namespace kvdump

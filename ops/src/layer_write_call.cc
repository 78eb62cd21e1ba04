#include "layer_write_call.h"

#include <c10/core/impl/VirtualGuardImpl.h>

#include <limits>

#include "kv_tensors.h"
#include "layer_write.h"
#include "torch_status.h"

namespace kvdump {

uint32_t requireLayer(int64_t layer) {
  if (layer < 0 || layer > std::numeric_limits<int32_t>::max()) {
    throwIfError(Status::InvalidArgument("layer must be a non-negative int32, got " + std::to_string(layer)));
  }
  return static_cast<uint32_t>(layer);
}

// [[gnu::hot]]: the calling thread's path of a layer write is grouped in one text section, so the
// few pages it runs from after a layer's matmuls evicted them are fetched together.
[[gnu::hot]] void queueLayerWrite(WriterContext& ctx, int64_t layer, const at::Tensor& kv_cache,
                                  const std::optional<at::Tensor>& v_cache, const at::Tensor& block_ids,
                                  const at::Tensor& block_hashes, std::string_view request,
                                  const std::function<bool()>& interrupted) {
  LayerWrite write;
  write.layer = requireLayer(layer);
  const LayerRange& stage = ctx.layers();
  if (!stage.empty() && (write.layer < stage.begin || write.layer >= stage.end)) {
    throwIfError(Status::InvalidArgument("layer " + std::to_string(write.layer) + " is outside this writer's layers " +
                                         stage.toString()));
  }
  throwIfError(describeLayerCall(kv_cache, v_cache, block_ids, block_hashes, write.kv, write.ids, write.hashes));
  // Two blocks under one key would leave whichever was put last: refuse rather than guess.
  throwIfError(checkDistinct(write.hashes, "block_hashes"));
  if (write.ids.empty()) {
    // Nothing to store, but the lifecycle rule holds for every call, not only for those that queue.
    if (ctx.pool().state() != WriterState::kAccepting) {
      throwIfError(Status::Lifecycle("write_cache_store() with no open cycle: call init() first"));
    }
    return;
  }
  const c10::Device device = write.kv.device();
  if (!device.is_cpu()) {
    // Recorded on the producing stream at capture time, so the worker copies exactly what the
    // forward wrote to this layer, and the main thread never waits.
    c10::impl::VirtualGuardImpl impl(device.type());
    write.ready = std::make_shared<c10::Event>(device.type());
    write.ready->record(impl.getStream(device));
  }
  write.target = ctx.target();
  TaskLabel label{std::string(), static_cast<int64_t>(write.layer), std::string(request), "write"};
  Status submitted = ctx.pool().submit(
      [w = std::move(write)](TaskControl& control) mutable { return runLayerWrite(*w.target, w, control); },
      std::move(label), std::nullopt, interrupted);
  throwIfError(submitted);
}

}  // namespace kvdump

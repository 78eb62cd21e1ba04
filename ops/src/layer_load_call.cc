#include "layer_load_call.h"

#include <memory>

#include "kv_tensors.h"
#include "layer_load.h"
#include "layer_write_call.h"
#include "load_destination.h"
#include "torch_status.h"

namespace kvdump {
namespace {

struct LoadArguments {
  uint32_t layer = 0;
  LayerKv kv;
  BlockIds ids;
  BlockHashes hashes;
};

LoadArguments loadArguments(int64_t layer, const at::Tensor& kv_cache, const std::optional<at::Tensor>& v_cache,
                            const at::Tensor& block_ids, const at::Tensor& block_hashes) {
  LoadArguments a;
  a.layer = requireLayer(layer);
  throwIfError(describeLayerCall(kv_cache, v_cache, block_ids, block_hashes, a.kv, a.ids, a.hashes));
  throwIfError(checkLoadDestination(kv_cache, v_cache));
  // Two records scattered into one block would leave whichever came last.
  throwIfError(checkDistinct(a.ids, "block_ids"));
  // The cache changes in place: tensors autograd saved from it must read as modified. An inference
  // tensor has no version to bump, and autograd never saved it.
  for (const at::Tensor* t : {&kv_cache, v_cache.has_value() ? &*v_cache : nullptr}) {
    if (t != nullptr && t->defined() && !t->is_inference()) t->unsafeGetTensorImpl()->bump_version();
  }
  return a;
}

}  // namespace

void loadLayerNow(LoaderContext& loader, int64_t layer, const at::Tensor& kv_cache,
                  const std::optional<at::Tensor>& v_cache, const at::Tensor& block_ids,
                  const at::Tensor& block_hashes) {
  LoadArguments a = loadArguments(layer, kv_cache, v_cache, block_ids, block_hashes);
  TaskControl on_this_thread;  // never abandoned: the caller waits for its own load
  throwIfError(runLayerLoad(*loader.target(), a.kv, a.layer, a.ids, a.hashes, on_this_thread));
}

void queueLayerLoad(LoaderContext& loader, int64_t layer, const at::Tensor& kv_cache,
                    const std::optional<at::Tensor>& v_cache, const at::Tensor& block_ids,
                    const at::Tensor& block_hashes) {
  auto a = std::make_shared<LoadArguments>(loadArguments(layer, kv_cache, v_cache, block_ids, block_hashes));
  const uint32_t layer_id = a->layer;
  throwIfError(loader.queue(layer_id, [a](const TransferTarget& target, TaskControl& control) {
    return runLayerLoad(target, a->kv, a->layer, a->ids, a->hashes, control);
  }));
}

}  // namespace kvdump

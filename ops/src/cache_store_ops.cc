// The torch ops: torch.ops.kvdump.write_cache_store / load_cache_store / load_cache_store_async
// (waiting for an async load is kvdump._C.Writer.wait_layer_loaded, which releases the GIL). Writers are passed as integer handles (see WriterContext), because the
// dispatcher cannot carry arbitrary C++ objects.
#include <ATen/ATen.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/library.h>

#include <limits>

#include "kv_tensors.h"
#include "layer_write.h"
#include "torch_status.h"

namespace kvdump {
namespace {

std::shared_ptr<WriterContext> requireWriter(int64_t handle) {
  auto ctx = WriterContext::lookup(handle);
  if (!ctx) {
    throwIfError(Status::InvalidArgument("writer handle " + std::to_string(handle) +
                                         " does not name a live kvdump writer (closed, or not a writer)"));
  }
  return ctx;
}

uint32_t requireLayer(int64_t layer) {
  if (layer < 0 || layer > std::numeric_limits<int32_t>::max()) {
    throwIfError(Status::InvalidArgument("layer must be a non-negative int32, got " + std::to_string(layer)));
  }
  return static_cast<uint32_t>(layer);
}

template <typename T>
T unwrap(Result<T> r) {
  throwIfError(r.status());
  return std::move(r).value();
}

std::string describe(uint32_t layer, const std::string& request) {
  std::string s = "write layer " + std::to_string(layer);
  if (!request.empty()) s += " of request " + request;
  return s;
}

void writeCacheStore(int64_t writer, int64_t layer, const at::Tensor& kv_cache, const std::optional<at::Tensor>& v_cache,
                     const at::Tensor& block_ids, const at::Tensor& block_hashes, std::string request) {
  auto ctx = requireWriter(writer);
  auto write = std::make_shared<LayerWrite>();
  write->layer = requireLayer(layer);
  const LayerRange& stage = ctx->options().layers;
  if (!stage.empty() && (write->layer < stage.begin || write->layer >= stage.end)) {
    throwIfError(Status::InvalidArgument("layer " + std::to_string(write->layer) + " is outside this writer's layers " +
                                         stage.toString()));
  }
  write->kv = unwrap(describeLayerKv(kv_cache, v_cache));
  write->ids = unwrap(hostBlockIds(block_ids, write->kv.num_blocks));
  write->hashes = unwrap(hostBlockHashes(block_hashes, write->ids.size()));
  // Two blocks under one key would leave whichever was put last: refuse rather than guess.
  throwIfError(checkDistinct(write->hashes, "block_hashes"));
  if (write->ids.empty()) {
    // Nothing to store, but the lifecycle rule holds for every call, not only for those that queue.
    if (ctx->writer().state() != WriterState::kAccepting) {
      throwIfError(Status::Lifecycle("write_cache_store() with no open cycle: call init() first"));
    }
    return;
  }
  const c10::Device device = write->kv.k.device();
  if (!device.is_cpu()) {
    // Recorded on the producing stream at capture time, so the worker copies exactly what the
    // forward wrote to this layer, and the main thread never waits.
    c10::impl::VirtualGuardImpl impl(device.type());
    write->ready = std::make_shared<c10::Event>(device.type());
    write->ready->record(impl.getStream(device));
  }
  write->request = request;
  const uint32_t layer_id = write->layer;
  std::shared_ptr<WriteTarget> target = ctx->target();
  Status submitted = ctx->writer().submit(
      [target, write](TaskControl& control) { return runLayerWrite(*target, *write, control); },
      TaskLabel{describe(layer_id, request), layer_id, std::move(request)});
  throwIfError(submitted);
}

struct LoadArguments {
  uint32_t layer = 0;
  LayerKv kv;
  std::vector<int64_t> ids;
  std::vector<uint64_t> hashes;
};

LoadArguments loadArguments(int64_t layer, const at::Tensor& kv_cache, const std::optional<at::Tensor>& v_cache,
                            const at::Tensor& block_ids, const at::Tensor& block_hashes) {
  LoadArguments a;
  a.layer = requireLayer(layer);
  a.kv = unwrap(describeLayerKv(kv_cache, v_cache));
  a.ids = unwrap(hostBlockIds(block_ids, a.kv.num_blocks));
  a.hashes = unwrap(hostBlockHashes(block_hashes, a.ids.size()));
  // Two records scattered into one block would leave whichever came last.
  throwIfError(checkDistinct(a.ids, "block_ids"));
  return a;
}

void loadCacheStore(int64_t writer, int64_t layer, const at::Tensor& kv_cache, const std::optional<at::Tensor>& v_cache,
                    const at::Tensor& block_ids, const at::Tensor& block_hashes) {
  auto ctx = requireWriter(writer);
  LoadArguments a = loadArguments(layer, kv_cache, v_cache, block_ids, block_hashes);
  TaskControl on_this_thread;  // never abandoned: the caller waits for its own load
  throwIfError(runLayerLoad(*ctx->target(), a.kv, a.layer, a.ids, a.hashes, on_this_thread));
}

void loadCacheStoreAsync(int64_t writer, int64_t layer, const at::Tensor& kv_cache,
                         const std::optional<at::Tensor>& v_cache, const at::Tensor& block_ids,
                         const at::Tensor& block_hashes) {
  auto ctx = requireWriter(writer);
  auto a = std::make_shared<LoadArguments>(loadArguments(layer, kv_cache, v_cache, block_ids, block_hashes));
  const uint32_t layer_id = a->layer;
  std::shared_ptr<WriteTarget> target = ctx->target();
  target->loads->expect(layer_id);
  Status submitted = ctx->writer().submit(
      [target, a](TaskControl& control) {
        Status s = runLayerLoad(*target, a->kv, a->layer, a->ids, a->hashes, control);
        // An abandoned load's waiters were told by abort(); a late outcome must not overwrite that.
        control.runIfLive([&] { target->loads->complete(a->layer, s); });
        return s;
      },
      TaskLabel{"load layer " + std::to_string(layer_id), layer_id, ""});
  if (!submitted.ok()) target->loads->complete(layer_id, submitted);
  throwIfError(submitted);
}

}  // namespace

TORCH_LIBRARY(kvdump, m) {
  m.def("write_cache_store(int writer, int layer, Tensor kv_cache, Tensor? v_cache, Tensor block_ids, "
        "Tensor block_hashes, str request=\"\") -> ()",
        &writeCacheStore);
  m.def("load_cache_store(int writer, int layer, Tensor(a!) kv_cache, Tensor(b!)? v_cache, Tensor block_ids, "
        "Tensor block_hashes) -> ()",
        &loadCacheStore);
  m.def("load_cache_store_async(int writer, int layer, Tensor(a!) kv_cache, Tensor(b!)? v_cache, "
        "Tensor block_ids, Tensor block_hashes) -> ()",
        &loadCacheStoreAsync);
}

}  // namespace kvdump

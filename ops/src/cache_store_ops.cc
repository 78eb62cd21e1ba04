// The torch ops: torch.ops.kvdump.write_cache_store / load_cache_store / load_cache_store_async,
// and the torch.classes.kvdump.Writer they take (waiting for an async load is
// kvdump._C.Writer.wait_layer_loaded, which releases the GIL).
#include <ATen/ATen.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/library.h>

#include <limits>

#include "kv_tensors.h"
#include "layer_write.h"
#include "layer_write_call.h"
#include "torch_status.h"
#include "torch_writer.h"

namespace kvdump {
namespace {

using WriterArg = c10::intrusive_ptr<TorchWriter>;

template <typename T>
T unwrap(Result<T> r) {
  throwIfError(r.status());
  return std::move(r).value();
}

void writeCacheStore(WriterArg writer, int64_t layer, const at::Tensor& kv_cache,
                     const std::optional<at::Tensor>& v_cache, const at::Tensor& block_ids,
                     const at::Tensor& block_hashes, c10::string_view request) {
  const std::shared_ptr<WriterContext> held = writer->context();
  queueLayerWrite(*held, layer, kv_cache, v_cache, block_ids, block_hashes,
                  std::string_view(request.data(), request.size()));
}

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
  a.kv = unwrap(describeLayerKv(kv_cache, v_cache));
  throwIfError(hostBlockIds(block_ids, a.kv.num_blocks, a.ids));
  throwIfError(hostBlockHashes(block_hashes, a.ids.size(), a.hashes));
  // Two records scattered into one block would leave whichever came last.
  throwIfError(checkDistinct(a.ids, "block_ids"));
  return a;
}

void loadCacheStore(WriterArg writer, int64_t layer, const at::Tensor& kv_cache,
                    const std::optional<at::Tensor>& v_cache, const at::Tensor& block_ids,
                    const at::Tensor& block_hashes) {
  const std::shared_ptr<WriterContext> ctx = writer->context();
  LoadArguments a = loadArguments(layer, kv_cache, v_cache, block_ids, block_hashes);
  TaskControl on_this_thread;  // never abandoned: the caller waits for its own load
  throwIfError(runLayerLoad(*ctx->target(), a.kv, a.layer, a.ids, a.hashes, on_this_thread));
}

void loadCacheStoreAsync(WriterArg writer, int64_t layer, const at::Tensor& kv_cache,
                         const std::optional<at::Tensor>& v_cache, const at::Tensor& block_ids,
                         const at::Tensor& block_hashes) {
  const std::shared_ptr<WriterContext> ctx = writer->context();
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
      TaskLabel{std::string(), layer_id, std::string(), "load"});
  if (!submitted.ok()) target->loads->complete(layer_id, submitted);
  throwIfError(submitted);
}

}  // namespace

TORCH_LIBRARY(kvdump, m) {
  // The class first: the schemas below name it.
  m.class_<TorchWriter>("Writer")
      .def(torch::init<int64_t>())
      .def("__obj_flatten__", &TorchWriter::flatten);
  m.def("write_cache_store(__torch__.torch.classes.kvdump.Writer writer, int layer, Tensor kv_cache, "
        "Tensor? v_cache, Tensor block_ids, Tensor block_hashes, str request=\"\") -> ()");
  m.def("load_cache_store(__torch__.torch.classes.kvdump.Writer writer, int layer, Tensor(a!) kv_cache, "
        "Tensor(b!)? v_cache, Tensor block_ids, Tensor block_hashes) -> ()");
  m.def("load_cache_store_async(__torch__.torch.classes.kvdump.Writer writer, int layer, Tensor(a!) kv_cache, "
        "Tensor(b!)? v_cache, Tensor block_ids, Tensor block_hashes) -> ()");
}

// One kernel for every real device (CPU, CUDA, an NPU): the device-specific work is inside. Not a
// catch-all, so the fake kernels that torch.compile traces with (kvdump.compile_support) own Meta.
TORCH_LIBRARY_IMPL(kvdump, CompositeExplicitAutograd, m) {
  m.impl("write_cache_store", &writeCacheStore);
  m.impl("load_cache_store", &loadCacheStore);
  m.impl("load_cache_store_async", &loadCacheStoreAsync);
}

}  // namespace kvdump

// The torch ops: torch.ops.kvdump.write_cache_store (taking torch.classes.kvdump.Writer) and
// load_cache_store / load_cache_store_async (taking torch.classes.kvdump.Loader). Waiting for an
// asynchronous load is kvdump._C.Loader.wait_layer, which releases the GIL.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "layer_load_call.h"
#include "layer_write_call.h"
#include "torch_context.h"

namespace kvdump {
namespace {

using WriterArg = c10::intrusive_ptr<TorchWriter>;
using LoaderArg = c10::intrusive_ptr<TorchLoader>;

void writeCacheStore(WriterArg writer, int64_t layer, const at::Tensor& kv_cache,
                     const std::optional<at::Tensor>& v_cache, const at::Tensor& block_ids,
                     const at::Tensor& block_hashes, c10::string_view request) {
  const std::shared_ptr<WriterContext> held = writer->context();
  queueLayerWrite(*held, layer, kv_cache, v_cache, block_ids, block_hashes,
                  std::string_view(request.data(), request.size()));
}

void loadCacheStore(LoaderArg loader, int64_t layer, const at::Tensor& kv_cache,
                    const std::optional<at::Tensor>& v_cache, const at::Tensor& block_ids,
                    const at::Tensor& block_hashes) {
  const std::shared_ptr<LoaderContext> held = loader->context();
  loadLayerNow(*held, layer, kv_cache, v_cache, block_ids, block_hashes);
}

void loadCacheStoreAsync(LoaderArg loader, int64_t layer, const at::Tensor& kv_cache,
                         const std::optional<at::Tensor>& v_cache, const at::Tensor& block_ids,
                         const at::Tensor& block_hashes) {
  const std::shared_ptr<LoaderContext> held = loader->context();
  queueLayerLoad(*held, layer, kv_cache, v_cache, block_ids, block_hashes);
}

}  // namespace

TORCH_LIBRARY(kvdump, m) {
  // The classes first: the schemas below name them.
  m.class_<TorchWriter>("Writer").def(torch::init<int64_t>()).def("__obj_flatten__", &TorchWriter::flatten);
  m.class_<TorchLoader>("Loader").def(torch::init<int64_t>()).def("__obj_flatten__", &TorchLoader::flatten);
  m.def("write_cache_store(__torch__.torch.classes.kvdump.Writer writer, int layer, Tensor kv_cache, "
        "Tensor? v_cache, Tensor block_ids, Tensor block_hashes, str request=\"\") -> ()");
  m.def("load_cache_store(__torch__.torch.classes.kvdump.Loader loader, int layer, Tensor(a!) kv_cache, "
        "Tensor(b!)? v_cache, Tensor block_ids, Tensor block_hashes) -> ()");
  m.def("load_cache_store_async(__torch__.torch.classes.kvdump.Loader loader, int layer, Tensor(a!) kv_cache, "
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

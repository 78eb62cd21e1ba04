#include "kv_tensors.h"

#include <sstream>

namespace kvdump {
namespace {

Status requireStrided(const at::Tensor& t, const char* name) {
  if (t.is_nested()) return Status::InvalidArgument(std::string(name) + " must be a dense (strided) tensor, got a nested one");
  if (t.layout() != at::kStrided) {
    std::ostringstream layout;
    layout << t.layout();
    return Status::InvalidArgument(std::string(name) + " must be a dense (strided) tensor, got layout " + layout.str());
  }
  return Status::Ok();
}

Result<BlockDtype> blockDtypeOf(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return BlockDtype::kFloat32;
    case at::kHalf: return BlockDtype::kFloat16;
    case at::kBFloat16: return BlockDtype::kBFloat16;
    case at::kDouble: return BlockDtype::kFloat64;
    case at::kFloat8_e4m3fn: return BlockDtype::kFloat8E4M3;
    case at::kFloat8_e5m2: return BlockDtype::kFloat8E5M2;
    default:
      return Status::InvalidArgument(std::string("kv_cache dtype must be a floating type (float32, float16, "
                                                 "bfloat16, float64, float8), got ") +
                                     c10::toString(t));
  }
}

Status blockIdOutOfRange(size_t i, const std::string& value, int64_t num_blocks) {
  return Status::InvalidArgument("block_ids[" + std::to_string(i) + "] = " + value + " is out of range for a cache of " +
                                 std::to_string(num_blocks) + " blocks");
}

std::string shapeOf(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

}  // namespace

size_t LayerKv::partBytes() const {
  return static_cast<size_t>(block_size * num_kv_heads * head_dim) * blockDtypeSize(dtype);
}

at::Tensor LayerKv::part(size_t p) const {
  const c10::Storage& source = storage[p] ? storage[p] : storage[0];
  const int64_t sizes[4] = {num_blocks, block_size, num_kv_heads, head_dim};
  at::Tensor view = at::empty({0}, at::TensorOptions().dtype(scalar_type).device(device_at));
  view.set_(source, storage_offset[p], sizes, part_strides[p]);
  return view;
}

Status LayerKv::memoryUnchanged() const {
  for (size_t p = 0; p < 2; ++p) {
    if (!storage[p]) continue;
    if (storage[p].data() != storage_data[p] || storage[p].nbytes() != storage_bytes[p]) {
      return Status::InvalidArgument(std::string(p == 0 ? "kv_cache" : "v_cache") +
                                     "'s memory was resized or replaced after write_cache_store or a load took it; "
                                     "its blocks were not touched");
    }
  }
  return Status::Ok();
}

void LayerKv::release() {
  storage[0] = c10::Storage();
  storage[1] = c10::Storage();
  part_data[0] = part_data[1] = nullptr;
}

BlockHeader LayerKv::headerFor(uint32_t layer, uint64_t hash, const KeySpace& space, uint64_t fingerprint) const {
  BlockHeader h;
  h.dtype = dtype;
  h.layout = layout;
  h.layer = layer;
  h.block_size = static_cast<uint32_t>(block_size);
  h.num_kv_heads = static_cast<uint32_t>(num_kv_heads);
  h.head_dim = static_cast<uint32_t>(head_dim);
  // validateKeySpace keeps both within the 16-bit fields.
  h.tp_rank = static_cast<uint16_t>(space.tp_rank);
  h.tp_size = static_cast<uint16_t>(space.tp_size);
  h.key_space = fingerprint;
  h.block_hash = hash;
  h.payload_bytes = parts() * partBytes();
  return h;
}

// [[gnu::hot]]: on the calling thread's path of a layer write (see layer_write_call.cc).
[[gnu::hot]] Result<LayerKv> describeLayerKv(const at::Tensor& kv_or_k, const std::optional<at::Tensor>& v) {
  if (!kv_or_k.defined()) return Status::InvalidArgument("kv_cache is undefined");
  LayerKv out;
  const bool separate = v.has_value() && v->defined();
  // Before any size or stride is read: a sparse or nested tensor has none to give.
  Status strided = requireStrided(kv_or_k, separate ? "k_cache" : "kv_cache");
  if (strided.ok() && separate) strided = requireStrided(*v, "v_cache");
  if (!strided.ok()) return strided;
  // Each part as [num_blocks, block_size, heads, head_dim] sizes and element strides; a latent
  // part is given a head dimension of 1 whose stride makes its blocks read as dense when they are.
  int64_t sizes[4];
  int64_t strides[2][4];
  auto take = [](c10::IntArrayRef from, int64_t* to) { std::copy(from.begin(), from.end(), to); };
  if (kv_or_k.dim() == 3) {
    if (separate) {
      return Status::InvalidArgument("a 3-D kv_cache is an MLA latent cache [num_blocks, block_size, head_size], "
                                     "which has no V: pass v_cache=None (got v_cache of shape " + shapeOf(*v) + ")");
    }
    out.layout = BlockLayout::kLatent;
    const c10::IntArrayRef s = kv_or_k.sizes(), t = kv_or_k.strides();
    const int64_t latent[4] = {s[0], s[1], 1, s[2]};
    const int64_t latent_strides[4] = {t[0], t[1], s[2], t[2]};
    std::copy(latent, latent + 4, sizes);
    std::copy(latent_strides, latent_strides + 4, strides[0]);
  } else if (separate) {
    const at::Tensor& k = kv_or_k;
    if (k.dim() != 4) {
      return Status::InvalidArgument("with a separate v_cache, k_cache must be 4-D [num_blocks, block_size, "
                                     "num_kv_heads, head_dim], got shape " + shapeOf(k));
    }
    if (v->sizes() != k.sizes()) {
      return Status::InvalidArgument("k_cache and v_cache shapes differ: " + shapeOf(k) + " vs " + shapeOf(*v));
    }
    if (v->scalar_type() != k.scalar_type()) return Status::InvalidArgument("k_cache and v_cache dtypes differ");
    if (v->device() != k.device()) return Status::InvalidArgument("k_cache and v_cache are on different devices");
    if (v->is_sparse() || v->is_quantized()) return Status::InvalidArgument("v_cache must be a dense tensor");
    take(k.sizes(), sizes);
    take(k.strides(), strides[0]);
    take(v->strides(), strides[1]);
  } else {
    if (kv_or_k.dim() != 5 || kv_or_k.size(0) != 2) {
      return Status::InvalidArgument("kv_cache must be 5-D [2, num_blocks, block_size, num_kv_heads, head_dim] "
                                     "(K then V), 3-D [num_blocks, block_size, head_size] (an MLA latent cache), "
                                     "or K with V passed separately; got shape " + shapeOf(kv_or_k));
    }
    take(kv_or_k.sizes().slice(1), sizes);
    take(kv_or_k.strides().slice(1), strides[0]);
    take(kv_or_k.strides().slice(1), strides[1]);
  }
  if (kv_or_k.device().is_meta()) return Status::InvalidArgument("kv_cache is on the meta device and holds no data");
  if (kv_or_k.is_sparse() || kv_or_k.is_quantized()) return Status::InvalidArgument("kv_cache must be a dense tensor");
  auto dtype = blockDtypeOf(kv_or_k.scalar_type());
  if (!dtype.ok()) return dtype.status();
  out.dtype = dtype.value();
  out.num_blocks = sizes[0];
  out.block_size = sizes[1];
  out.num_kv_heads = sizes[2];
  out.head_dim = sizes[3];
  if (out.block_size <= 0 || out.num_kv_heads <= 0 || out.head_dim <= 0) {
    return Status::InvalidArgument("kv_cache has an empty block dimension: " + shapeOf(kv_or_k));
  }
  const size_t parts = out.parts();
  for (size_t p = 0; p < parts; ++p) {
    if (strides[p][3] != 1) {
      return Status::InvalidArgument(out.layout == BlockLayout::kLatent
                                         ? "kv_cache's head_size must be the innermost, contiguous dimension"
                                         : "kv_cache's head_dim must be the innermost, contiguous dimension");
    }
  }
  if (!kv_or_k.has_storage() || (separate && !v->has_storage())) {
    return Status::InvalidArgument("kv_cache has no storage to read blocks from (a tensor subclass without data?)");
  }
  const int64_t element = static_cast<int64_t>(kv_or_k.element_size());
  out.scalar_type = kv_or_k.scalar_type();
  out.device_at = kv_or_k.device();
  out.storage[0] = kv_or_k.storage();
  out.storage_offset[0] = kv_or_k.storage_offset();
  out.part_data[0] = static_cast<uint8_t*>(kv_or_k.data_ptr());
  if (separate) {
    out.storage[1] = v->storage();
    out.storage_offset[1] = v->storage_offset();
    out.part_data[1] = static_cast<uint8_t*>(v->data_ptr());
  } else if (parts == 2) {
    out.storage_offset[1] = out.storage_offset[0] + kv_or_k.stride(0);
    out.part_data[1] = out.part_data[0] + kv_or_k.stride(0) * element;
  }
  for (size_t p = 0; p < parts; ++p) std::copy(strides[p], strides[p] + 4, out.part_strides[p]);
  // After data_ptr(), which gives a copy-on-write storage its own memory.
  for (size_t p = 0; p < 2; ++p) {
    if (!out.storage[p]) continue;
    out.storage_data[p] = out.storage[p].data();
    out.storage_bytes[p] = out.storage[p].nbytes();
  }
  bool dense = kv_or_k.device().is_cpu();
  for (size_t p = 0; p < parts; ++p) {
    out.part_block_stride[p] = strides[p][0] * element;
    dense = dense && strides[p][2] == out.head_dim && strides[p][1] == out.num_kv_heads * out.head_dim;
  }
  out.dense = dense;
  return out;
}

[[gnu::hot]] Status describeLayerCall(const at::Tensor& kv_cache, const std::optional<at::Tensor>& v_cache,
                                      const at::Tensor& block_ids, const at::Tensor& block_hashes, LayerKv& kv,
                                      BlockIds& ids, BlockHashes& hashes) {
  Result<LayerKv> described = describeLayerKv(kv_cache, v_cache);
  if (!described.ok()) return described.status();
  kv = std::move(described).value();
  Status s = hostBlockIds(block_ids, kv.num_blocks, ids);
  if (!s.ok()) return s;
  return hostBlockHashes(block_hashes, ids.size(), hashes);
}

[[gnu::hot]] Status hostBlockIds(const at::Tensor& ids, int64_t num_blocks, BlockIds& out) {
  if (!ids.defined()) return Status::InvalidArgument("block_ids is undefined");
  if (Status strided = requireStrided(ids, "block_ids"); !strided.ok()) return strided;
  if (!ids.device().is_cpu()) {
    return Status::InvalidArgument("block_ids must be on the CPU (reading device ids would sync the stream), got " +
                                   ids.device().str());
  }
  if (ids.dim() != 1) return Status::InvalidArgument("block_ids must be 1-D, got shape " + shapeOf(ids));
  if (!at::isIntegralType(ids.scalar_type(), /*includeBool=*/false)) {
    return Status::InvalidArgument(std::string("block_ids must be integers, got ") + c10::toString(ids.scalar_type()));
  }
  // int64 and contiguous, as the hashing helpers make them, is read in place; anything else converts.
  // Bound by reference, not copied: this runs without the GIL, and copying a tensor Python holds
  // takes the GIL (twice: to count the new reference, and to drop it).
  if (ids.scalar_type() == at::kUInt64) {
    // Checked before the conversion to int64, which would wrap a large one into a negative id.
    const c10::MaybeOwned<at::Tensor> flat = ids.expect_contiguous();  // no new reference when it is
    const uint64_t* raw = static_cast<const uint64_t*>(flat->data_ptr());
    for (int64_t i = 0; i < flat->numel(); ++i) {
      if (raw[i] >= static_cast<uint64_t>(num_blocks)) {
        return blockIdOutOfRange(static_cast<size_t>(i), std::to_string(raw[i]), num_blocks);
      }
    }
  }
  const bool direct = ids.scalar_type() == at::kLong && ids.is_contiguous();
  at::Tensor converted;
  const at::Tensor& as_long = direct ? ids : (converted = ids.to(at::kLong).contiguous());
  const int64_t* p = as_long.data_ptr<int64_t>();
  out.assign(p, p + as_long.numel());
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] < 0 || out[i] >= num_blocks) return blockIdOutOfRange(i, std::to_string(out[i]), num_blocks);
  }
  return Status::Ok();
}

[[gnu::hot]] Status hostBlockHashes(const at::Tensor& hashes, size_t expected, BlockHashes& out) {
  if (!hashes.defined()) return Status::InvalidArgument("block_hashes is undefined");
  if (Status strided = requireStrided(hashes, "block_hashes"); !strided.ok()) return strided;
  if (!hashes.device().is_cpu()) return Status::InvalidArgument("block_hashes must be on the CPU");
  if (hashes.dim() != 1 || hashes.scalar_type() != at::kLong) {
    return Status::InvalidArgument("block_hashes must be a 1-D int64 tensor, got " +
                                   std::string(c10::toString(hashes.scalar_type())) + " of shape " + shapeOf(hashes));
  }
  if (static_cast<size_t>(hashes.numel()) != expected) {
    return Status::InvalidArgument("block_ids and block_hashes differ in length: " + std::to_string(expected) +
                                   " ids, " + std::to_string(hashes.numel()) + " hashes");
  }
  at::Tensor contiguous;  // a reference otherwise, as for the ids
  const at::Tensor& c = hashes.is_contiguous() ? hashes : (contiguous = hashes.contiguous());
  const int64_t* p = c.data_ptr<int64_t>();
  out.resize(static_cast<size_t>(c.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint64_t>(p[i]);
  return Status::Ok();
}

}  // namespace kvdump

"""vLLM's per-layer KV cache layouts, as the kvdump ops take them.

The stored record of a block is layout-neutral (K then V, each ``[block_size, heads, head_dim]``, or
the one latent part for MLA), so a block saved from one layout loads into another with the same
heads, dims and dtype."""

from __future__ import annotations

import dataclasses

import torch

from kvdump.errors import KvdumpValueError, UnsupportedError


@dataclasses.dataclass(frozen=True)
class LayerCache:
    """What ``write_cache_store`` / the loader take for one layer: ``kv`` plus ``v`` when V is a
    separate view; ``payload_bytes_per_block`` is what one block of this layer stores."""

    kv: torch.Tensor
    v: torch.Tensor | None
    layout: str
    payload_bytes_per_block: int


# vLLM keeps FP8 caches as uint8 tensors; kvdump stores their bytes under the real element type so
# a record names what it holds. The other quantized cache dtypes carry per-token scales that are not
# in the cache tensor, so their blocks cannot be stored by themselves.
_FP8_CACHE_DTYPES = {"fp8": torch.float8_e4m3fn, "fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
_PLAIN_CACHE_DTYPES = {"auto", "float32", "float", "half", "float16", "bfloat16", "fp8_inc"}


def element_view(cache_dtype: str) -> torch.dtype | None:
    """The dtype to view vLLM's cache tensors as for ``--kv-cache-dtype cache_dtype`` (None: as they
    are). Raises :class:`kvdump.UnsupportedError` for a cache dtype whose blocks need scales kept
    outside the cache."""
    if cache_dtype in _FP8_CACHE_DTYPES:
        return _FP8_CACHE_DTYPES[cache_dtype]
    if cache_dtype in _PLAIN_CACHE_DTYPES:
        return None
    raise UnsupportedError(
        f"KvdumpConnector does not store KV caches of --kv-cache-dtype {cache_dtype!r}; supported: "
        f"{', '.join(sorted(_PLAIN_CACHE_DTYPES | set(_FP8_CACHE_DTYPES)))}"
    )


def _detect(kv: torch.Tensor) -> str:
    if kv.dim() == 3:
        return "mla"
    if kv.dim() == 5:
        first, second = kv.shape[0] == 2, kv.shape[1] == 2
        if first and not second:
            return "flash_attn"
        if second and not first:
            return "flash_infer"
    if kv.dim() == 5 and kv.shape[0] == 2 and kv.shape[1] == 2:
        raise KvdumpValueError(
            f"cannot tell the KV layout of shape {tuple(kv.shape)} (both of the first two dimensions are 2); "
            "set kv_layout in kv_connector_extra_config to 'flash_attn' or 'flash_infer'"
        )
    raise KvdumpValueError(
        f"unsupported KV cache shape {tuple(kv.shape)}: expected FlashAttention [2, blocks, block_size, heads, "
        "head_size], FlashInfer [blocks, 2, block_size, heads, head_size] or MLA [blocks, block_size, head_size]"
    )


def layer_cache(kv: torch.Tensor, layout: str = "auto", view_as: torch.dtype | None = None) -> LayerCache:
    """Describe vLLM's cache tensor of one layer under ``layout`` (``auto`` detects it), its bytes
    viewed as ``view_as`` when given (FP8 caches held as uint8)."""
    if not isinstance(kv, torch.Tensor):
        raise KvdumpValueError(f"a layer's KV cache must be a tensor, got {type(kv).__name__}")
    if view_as is not None and kv.dtype != view_as:
        if kv.element_size() != torch.empty(0, dtype=view_as).element_size():
            raise KvdumpValueError(f"cannot view a {kv.dtype} KV cache as {view_as}")
        kv = kv.view(view_as)
    chosen = _detect(kv) if layout == "auto" else layout
    element = kv.element_size()
    if chosen == "mla":
        if kv.dim() != 3:
            raise KvdumpValueError(f"kv_layout 'mla' expects [blocks, block_size, head_size], got {tuple(kv.shape)}")
        return LayerCache(kv, None, chosen, kv.shape[1] * kv.shape[2] * element)
    if kv.dim() != 5:
        raise KvdumpValueError(f"kv_layout {chosen!r} expects a 5-D cache, got shape {tuple(kv.shape)}")
    if chosen == "flash_attn":
        if kv.shape[0] != 2:
            raise KvdumpValueError(f"kv_layout 'flash_attn' expects [2, blocks, ...], got {tuple(kv.shape)}")
        half = kv.shape[2] * kv.shape[3] * kv.shape[4] * element
        return LayerCache(kv, None, chosen, 2 * half)
    if chosen == "flash_infer":
        if kv.shape[1] != 2:
            raise KvdumpValueError(f"kv_layout 'flash_infer' expects [blocks, 2, ...], got {tuple(kv.shape)}")
        half = kv.shape[2] * kv.shape[3] * kv.shape[4] * element
        # K and V as views whose blocks are strided apart: the ops read them in place, no copy.
        return LayerCache(kv[:, 0], kv[:, 1], chosen, 2 * half)
    raise KvdumpValueError(f"kv_layout must be one of auto, flash_attn, flash_infer, mla; got {layout!r}")

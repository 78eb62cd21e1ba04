"""The per-layer write op as a Python function, ``write_cache_store``; all the work happens in C++
(``torch.ops.kvdump.write_cache_store``). The loads live in :mod:`kvdump.loader`, re-exported here
for code that imported them from this module."""

from __future__ import annotations

import torch

from kvdump import _C, _arguments
from kvdump._torch_errors import call_op, raise_typed
from kvdump.block_lists import IntsLike, as_int64, layer_op_arguments
from kvdump.errors import KvdumpTypeError
from kvdump.loader import KVLoader, load_cache_store
from kvdump.writer import AsyncWriter

_WRITE = torch.ops.kvdump.write_cache_store.default
_DIRECT = _C.write_cache_store_direct


def write_cache_store(
    writer: AsyncWriter,
    layer: int,
    kv_cache: torch.Tensor,
    block_ids: IntsLike,
    block_hashes: IntsLike,
    *,
    v_cache: torch.Tensor | None = None,
    request: str = "",
) -> None:
    """Queue one layer's blocks for the store and return at once.

    ``kv_cache`` is ``[2, num_blocks, block_size, num_kv_heads, head_dim]`` (K then V), K with
    ``v_cache`` given separately, or an MLA latent cache ``[num_blocks, block_size, head_size]``
    (no V: ``v_cache`` must be None; each block is stored as its latent bytes alone). Blocks
    ``block_ids`` are stored under keys made from ``block_hashes``. The tensors are captured by
    reference (no copy, no device sync): do not modify those blocks until ``wait_all_done``
    returns. Bad input raises
    :class:`kvdump.KvdumpValueError` before anything is queued."""
    try:
        # The hot path is this one call: the C++ side validates everything before it queues, and
        # declines (NotImplemented) whatever the registered op should handle instead.
        if _DIRECT(writer, layer, kv_cache, v_cache, block_ids, block_hashes, request) is None:
            return
    except Exception as exc:  # noqa: BLE001 - ours are raised typed, the rest as they are
        raise_typed(exc)
    _write_through_op(writer, layer, kv_cache, block_ids, block_hashes, v_cache, request)


@torch._dynamo.substitute_in_graph(_C.write_cache_store_direct, skip_signature_check=True)
def _direct_as_traced(
    writer: AsyncWriter,
    layer: int,
    kv_cache: torch.Tensor,
    v_cache: torch.Tensor | None,
    block_ids: torch.Tensor,
    block_hashes: torch.Tensor,
    request: str,
) -> None:
    """What ``torch.compile`` puts in the graph for the direct entry: the registered op."""
    _WRITE(writer.torch_writer, layer, kv_cache, v_cache, block_ids, block_hashes, request)


def _write_through_op(
    writer: object,
    layer: object,
    kv_cache: object,
    block_ids: object,
    block_hashes: object,
    v_cache: object,
    request: object,
) -> None:
    """``write_cache_store`` for what the direct entry declines: check the arguments one by one
    (naming the bad one), convert what needs it (block ids as a list), and call the registered op,
    which goes through the dispatcher (tensor subclasses, dispatch modes)."""
    if not isinstance(writer, AsyncWriter):
        raise KvdumpTypeError(f"writer must be a kvdump.AsyncWriter, got {type(writer).__name__} {writer!r}") from None
    checked = layer_op_arguments(layer, kv_cache, v_cache, block_ids, block_hashes)
    call_op(_WRITE, writer.torch_writer, *checked, _arguments.text("request", request))


__all__ = ["IntsLike", "KVLoader", "as_int64", "load_cache_store", "write_cache_store"]

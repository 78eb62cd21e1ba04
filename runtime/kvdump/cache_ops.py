"""The per-layer write op as a Python function, ``write_cache_store``; all the work happens in C++
(``torch.ops.kvdump.write_cache_store``). The loads live in :mod:`kvdump.loader`, re-exported here
for code that imported them from this module."""

from __future__ import annotations

import torch

from kvdump import _C, _arguments
from kvdump._torch_errors import call_op
from kvdump.block_lists import IntsLike, as_int64, layer_op_arguments
from kvdump.errors import KvdumpTypeError, error_for_code
from kvdump.loader import KVLoader, load_cache_store
from kvdump.writer import AsyncWriter

_WRITE = torch.ops.kvdump.write_cache_store.default


def _write_declined(
    writer: object,
    layer: object,
    kv_cache: object,
    block_ids: object,
    block_hashes: object,
    *,
    v_cache: object = None,
    request: object = "",
    **unexpected: object,
) -> None:
    """``write_cache_store`` for what its C++ entry declines: check the arguments one by one
    (naming the bad one), convert what needs it (block ids as a list), and call the registered op,
    which goes through the dispatcher (tensor subclasses, dispatch modes)."""
    if unexpected:
        name = next(iter(unexpected))
        raise KvdumpTypeError(f"write_cache_store() got an unexpected keyword argument {name!r}")
    if not isinstance(writer, AsyncWriter):
        raise KvdumpTypeError(f"writer must be a kvdump.AsyncWriter, got {type(writer).__name__} {writer!r}") from None
    checked = layer_op_arguments(layer, kv_cache, v_cache, block_ids, block_hashes)
    call_op(_WRITE, writer.torch_writer, *checked, _arguments.text("request", request))


# The public function is the C++ entry itself, so that the forward's thread runs no Python frame per
# layer: it queues plain arguments, raises its errors as error_for_code makes them (from the Status,
# as the bindings do), and hands anything else to _write_declined.
_C.install_write_fallbacks(_write_declined, error_for_code)
# Python words a call's own mistakes (a positional argument missing or too many) with the function's
# qualified name: the caller called write_cache_store, not this module's internals.
_write_declined.__qualname__ = "write_cache_store"
write_cache_store = _C.write_cache_store


@torch._dynamo.substitute_in_graph(_C.write_cache_store, skip_signature_check=True)
def _write_as_traced(
    writer: AsyncWriter,
    layer: int,
    kv_cache: torch.Tensor,
    block_ids: torch.Tensor,
    block_hashes: torch.Tensor,
    *,
    v_cache: torch.Tensor | None = None,
    request: str = "",
) -> None:
    """What ``torch.compile`` puts in the graph for ``write_cache_store``: the registered op."""
    _WRITE(writer.torch_writer, layer, kv_cache, v_cache, block_ids, block_hashes, request)


__all__ = ["IntsLike", "KVLoader", "as_int64", "load_cache_store", "write_cache_store"]

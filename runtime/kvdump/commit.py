"""Commit records: a block is published only after every layer of it is stored.

The writer decides in C++, per request and per block, from the layers that actually stored, and
writes one small checksummed record per block as the cycle's last task; a prefill that fails, is
cancelled or dies mid-write leaves blocks without records, which :func:`lookup` reports as missing.
A record names the layers it covers and the key space (namespace and TP layout) it belongs to."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from kvdump import _C, _arguments
from kvdump.errors import KvdumpTypeError, KvdumpValueError
from kvdump.key_space import KeySpace, resolve_key_space


def _hash_list(block_hashes: Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(block_hashes, torch.Tensor):
        if block_hashes.dtype != torch.int64 or block_hashes.dim() != 1:
            raise KvdumpValueError(
                f"block_hashes must be a 1-D int64 tensor, got {block_hashes.dtype} "
                f"of shape {tuple(block_hashes.shape)}"
            )
        return block_hashes.tolist()
    if isinstance(block_hashes, (str, bytes)) or not hasattr(block_hashes, "__iter__"):
        raise KvdumpTypeError(
            f"block_hashes must be a sequence of ints or a 1-D int64 tensor, got {type(block_hashes).__name__}"
        )
    out = []
    for i, h in enumerate(block_hashes):
        if isinstance(h, bool):
            raise KvdumpTypeError(f"block_hashes[{i}] must be an int, got bool")
        try:
            value = operator.index(h)  # 1001.5 is refused, not read as 1001
        except TypeError:
            raise KvdumpTypeError(f"block_hashes[{i}] must be an int, got {type(h).__name__} {h!r}") from None
        if not -(2**63) <= value < 2**63:
            raise KvdumpValueError(f"block_hashes[{i}] = {value} does not fit a signed 64-bit hash")
        out.append(value)
    return out


def lookup(
    store: _C.CacheStore,
    block_hashes: Sequence[int] | torch.Tensor,
    *,
    key_space: KeySpace | None = None,
    num_layers: int | None = None,
    layers: tuple[int, int] | range | None = None,
    namespace: str | None = None,
    tp_rank: int | None = None,
    tp_size: int | None = None,
) -> int:
    """How many leading blocks of ``block_hashes`` are published in ``key_space`` (default
    ``kvdump.KeySpace()``; ``namespace``/``tp_rank``/``tp_size`` are its deprecated spelling): each
    has a commit record covering layers ``[0, num_layers)`` (or ``layers=(begin, end)`` for a
    pipeline stage; with neither, any whole-model record). One batched read; stops at the first
    miss, since a prefix is only useful whole. A record that is corrupt (:class:`ChecksumError`) or
    from another key space (:class:`KeySpaceMismatchError`) raises, naming its key."""
    _arguments.store("store", store)
    space = resolve_key_space(key_space, namespace, tp_rank, tp_size, caller="lookup")
    if num_layers is not None and layers is not None:
        raise KvdumpValueError("give num_layers or layers, not both")
    if num_layers is not None:
        span = (0, _arguments.integer("num_layers", num_layers, minimum=1, maximum=2**31 - 1))
    else:
        span = _arguments.layer_range("layers", layers) or (0, 0)
    return _C.lookup(store, space, _hash_list(block_hashes), *span)

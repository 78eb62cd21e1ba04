"""Commit records: a request's blocks are published only after every layer of them is stored.

The writer puts one small commit record per block hash after a cycle's barrier succeeds, so a
reader that finds the commit knows all layers are there; a prefill that fails or dies mid-write
leaves blocks without commits, which ``lookup`` reports as missing (DESIGN.md §5)."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from kvdump import _C

_MAGIC = b"KVDC"
_VERSION = 1
_LAYOUT = struct.Struct("<4sHHI")  # magic, version, reserved, num_layers


def encode_commit(num_layers: int) -> bytes:
    """The value of a commit record for a block stored in ``num_layers`` layers."""
    return _LAYOUT.pack(_MAGIC, _VERSION, 0, num_layers)


def decode_commit(value: bytes) -> int | None:
    """The layer count of a commit record, or None if ``value`` is not one."""
    if len(value) != _LAYOUT.size:
        return None
    magic, version, _, num_layers = _LAYOUT.unpack(value)
    if magic != _MAGIC or version != _VERSION:
        return None
    return num_layers


def publish(
    store: _C.CacheStore,
    block_hashes: Iterable[int],
    num_layers: int,
    *,
    namespace: str,
    tp_rank: int = 0,
    tp_size: int = 1,
) -> int:
    """Write the commit records of ``block_hashes``; returns how many. Call only after every layer
    of those blocks is stored."""
    value = encode_commit(num_layers)
    unique = list(dict.fromkeys(int(h) for h in block_hashes))  # order kept
    if unique:
        # One batched put: a remote store pays one round trip for the whole commit, not one per block.
        store.batch_put([_C.commit_key(namespace, tp_rank, tp_size, h) for h in unique], [value] * len(unique))
    return len(unique)


def lookup(
    store: _C.CacheStore,
    block_hashes: Sequence[int],
    *,
    namespace: str = "kvdump",
    tp_rank: int = 0,
    tp_size: int = 1,
    num_layers: int | None = None,
) -> int:
    """How many leading blocks of ``block_hashes`` are fully available (committed, and with at least
    ``num_layers`` layers when given). Stops at the first miss: a prefix is only useful whole."""
    found = 0
    for h in block_hashes:
        value = store.get(_C.commit_key(namespace, tp_rank, tp_size, int(h)))
        layers = None if value is None else decode_commit(value)
        if layers is None or (num_layers is not None and layers < num_layers):
            break
        found += 1
    return found

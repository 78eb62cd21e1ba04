"""The per-layer KV ops as Python functions: ``write_cache_store``, ``load_cache_store``, and the
asynchronous per-layer loader. All the work happens in C++ (``torch.ops.kvdump.*``)."""

from __future__ import annotations

import operator
import weakref
from collections.abc import Sequence

import torch

from kvdump import _C
from kvdump._torch_errors import call_op
from kvdump.writer import AsyncWriter, CycleReport

IntsLike = torch.Tensor | Sequence[int]


def as_int64(values: IntsLike, what: str) -> torch.Tensor:
    """Block ids or hashes as the 1-D int64 CPU tensor the ops take (tensors pass through)."""
    if isinstance(values, torch.Tensor):
        return values
    try:
        # operator.index: a float (or a str) is refused, not truncated to a block id.
        return torch.tensor([operator.index(v) for v in values], dtype=torch.int64)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise TypeError(f"{what} must be a tensor or a sequence of ints: {exc}") from None


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

    ``kv_cache`` is ``[2, num_blocks, block_size, num_kv_heads, head_dim]`` (K then V), or K with
    ``v_cache`` given separately. Blocks ``block_ids`` are stored under keys made from
    ``block_hashes``. The tensors are captured by reference (no copy, no device sync): do not
    modify those blocks until ``wait_all_done`` returns. Bad input raises
    :class:`kvdump.KvdumpValueError` before anything is queued."""
    if not isinstance(writer, AsyncWriter):
        raise TypeError(f"writer must be a kvdump.AsyncWriter, got {type(writer).__name__}")
    hashes = as_int64(block_hashes, "block_hashes")
    call_op(
        torch.ops.kvdump.write_cache_store,
        writer.handle,
        layer,
        kv_cache,
        v_cache,
        as_int64(block_ids, "block_ids"),
        hashes,
        request,
    )
    writer._note_written(layer, hashes)


class KVLoader:
    """Decode-side loader: reads blocks of a layer from the store, checks each record's header and
    checksum, and scatters them into the caller's own block ids.

    ``load`` is synchronous. For overlap, open a session, ``load_async`` every layer, and
    ``wait_layer(i)`` right before layer ``i`` runs; worker threads do the reads meanwhile."""

    def __init__(
        self,
        store: _C.CacheStore,
        *,
        namespace: str = "kvdump",
        tp_rank: int = 0,
        tp_size: int = 1,
        num_threads: int | None = None,
        staging_bytes: int = 256 << 20,
    ) -> None:
        self._writer = AsyncWriter(
            store,
            num_threads=num_threads,
            namespace=namespace,
            tp_rank=tp_rank,
            tp_size=tp_size,
            staging_bytes=staging_bytes,
        )

    @property
    def writer(self) -> AsyncWriter:
        """The pool the loads run on (its ``stats()`` include the loads)."""
        return self._writer

    def load(
        self,
        layer: int,
        kv_cache: torch.Tensor,
        block_ids: IntsLike,
        block_hashes: IntsLike,
        *,
        v_cache: torch.Tensor | None = None,
    ) -> None:
        """Load one layer now. :class:`KeyNotFoundError` / :class:`ChecksumError` name the key."""
        self._call(torch.ops.kvdump.load_cache_store, layer, kv_cache, block_ids, block_hashes, v_cache)

    def start(self) -> None:
        """Open a loading session (the pool's cycle)."""
        self._writer.init()

    def load_async(
        self,
        layer: int,
        kv_cache: torch.Tensor,
        block_ids: IntsLike,
        block_hashes: IntsLike,
        *,
        v_cache: torch.Tensor | None = None,
    ) -> None:
        """Queue one layer's load on the pool; ``wait_layer(layer)`` waits for it."""
        self._call(torch.ops.kvdump.load_cache_store_async, layer, kv_cache, block_ids, block_hashes, v_cache)

    def _call(
        self,
        op: object,
        layer: int,
        kv_cache: torch.Tensor,
        block_ids: IntsLike,
        block_hashes: IntsLike,
        v_cache: torch.Tensor | None,
    ) -> None:
        call_op(
            op,  # type: ignore[arg-type]
            self._writer.handle,
            layer,
            kv_cache,
            v_cache,
            as_int64(block_ids, "block_ids"),
            as_int64(block_hashes, "block_hashes"),
        )

    def wait_layer(self, layer: int, timeout: float | None = None) -> None:
        """Block (GIL released) until ``layer`` is loaded; raises its error if it failed."""
        self._writer._impl.wait_layer_loaded(layer, timeout)

    def finish(self, timeout: float | None = None) -> CycleReport:
        """Close the session: wait for every queued load, raising the first failure."""
        return self._writer.wait_all_done(timeout)

    def abort(self) -> None:
        """Cancel queued loads; waiters get :class:`AbortedError`."""
        self._writer.abort()

    def close(self) -> None:
        self._writer.close()


_default_loaders: weakref.WeakKeyDictionary[_C.CacheStore, dict[tuple[str, int, int], KVLoader]] = (
    weakref.WeakKeyDictionary()
)


def load_cache_store(
    store: _C.CacheStore,
    layer: int,
    kv_cache: torch.Tensor,
    block_ids: IntsLike,
    block_hashes: IntsLike,
    *,
    v_cache: torch.Tensor | None = None,
    namespace: str = "kvdump",
    tp_rank: int = 0,
    tp_size: int = 1,
) -> None:
    """Synchronously load one layer's blocks from ``store`` into ``kv_cache`` at ``block_ids``
    (the decode side's own ids). See :class:`KVLoader` for the asynchronous per-layer form."""
    per_store = _default_loaders.setdefault(store, {})
    key = (namespace, tp_rank, tp_size)
    loader = per_store.get(key)
    if loader is None:
        loader = per_store[key] = KVLoader(store, namespace=namespace, tp_rank=tp_rank, tp_size=tp_size, num_threads=1)
    loader.load(layer, kv_cache, block_ids, block_hashes, v_cache=v_cache)

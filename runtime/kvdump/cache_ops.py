"""The per-layer KV ops as Python functions: ``write_cache_store``, ``load_cache_store``, and the
asynchronous per-layer loader. All the work happens in C++ (``torch.ops.kvdump.*``)."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch

from kvdump import _C, _arguments
from kvdump._torch_errors import call_op, raise_typed
from kvdump.errors import KvdumpTypeError
from kvdump.writer import AsyncWriter, CycleReport

IntsLike = torch.Tensor | Sequence[int]

_WRITE = torch.ops.kvdump.write_cache_store.default
_DIRECT = _C.write_cache_store_direct


def as_int64(values: IntsLike, what: str) -> torch.Tensor:
    """Block ids or hashes as the 1-D int64 CPU tensor the ops take (tensors pass through)."""
    if isinstance(values, torch.Tensor):
        return values
    try:
        # operator.index: a float (or a str) is refused, not truncated to a block id.
        return torch.tensor([operator.index(v) for v in values], dtype=torch.int64)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise KvdumpTypeError(f"{what} must be a tensor or a sequence of ints: {exc}") from None


def _layer(layer: Any) -> int:
    return _arguments.integer("layer", layer, minimum=0, maximum=2**31 - 1)


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
    call_op(
        _WRITE,
        writer.torch_writer,
        _layer(layer),
        _arguments.tensor("kv_cache", kv_cache),
        _arguments.tensor("v_cache", v_cache, optional=True),
        as_int64(block_ids, "block_ids"),
        as_int64(block_hashes, "block_hashes"),
        _arguments.text("request", request),
    )


class KVLoader:
    """Decode-side loader: reads blocks of a layer from the store, checks each record's header and
    checksum, and scatters them into the caller's own block ids. The destination takes the forms
    ``write_cache_store`` accepts; a latent record never loads into a K/V cache, nor the reverse
    (:class:`KvdumpValueError` naming the layout).

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
        abort_timeout: float = 5.0,
        worker_nice: int = 10,
    ) -> None:
        self._writer = AsyncWriter(
            store,
            num_threads=num_threads,
            namespace=namespace,
            tp_rank=tp_rank,
            tp_size=tp_size,
            staging_bytes=staging_bytes,
            abort_timeout=abort_timeout,
            worker_nice=worker_nice,
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
            self._writer.torch_writer,
            _layer(layer),
            _arguments.tensor("kv_cache", kv_cache),
            _arguments.tensor("v_cache", v_cache, optional=True),
            as_int64(block_ids, "block_ids"),
            as_int64(block_hashes, "block_hashes"),
        )

    def wait_layer(self, layer: int, timeout: float | None = None) -> None:
        """Block (GIL released) until ``layer`` is loaded; raises its error if it failed,
        :class:`WriteTimeout` when ``timeout`` passes, :class:`AbortedError` after ``abort()`` and
        :class:`LifecycleError` once the loader is closed (also for a thread already waiting)."""
        self._writer._impl.wait_layer_loaded(_layer(layer), _arguments.seconds("timeout", timeout, optional=True))

    def finish(self, timeout: float | None = None) -> CycleReport:
        """Close the session: wait for every queued load, raising the first failure."""
        return self._writer.wait_all_done(timeout)

    def abort(self, timeout: float | None = None) -> None:
        """Cancel queued loads and abandon running ones after ``timeout`` (default: the loader's
        ``abort_timeout``); waiters get :class:`AbortedError`. An abandoned load never writes into
        the destination cache afterwards."""
        self._writer.abort(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Abort within ``timeout`` and stop the threads; waiters get :class:`LifecycleError`."""
        self._writer.close(timeout)

    def __enter__(self) -> KVLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    (the decode side's own ids), on the calling thread. Keeps nothing once it returns; to load many
    layers, a :class:`KVLoader` reuses its staging memory (and offers the asynchronous form)."""
    with KVLoader(store, namespace=namespace, tp_rank=tp_rank, tp_size=tp_size, num_threads=1) as loader:
        loader.load(layer, kv_cache, block_ids, block_hashes, v_cache=v_cache)

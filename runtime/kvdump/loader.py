"""The decode side's loader: reads a layer's blocks from a store into the caller's own block ids,
now or on worker threads. It runs on an engine of its own (``kvdump._C.Loader``); nothing here
touches a writer."""

from __future__ import annotations

import warnings
from typing import Any, Unpack

import torch

from kvdump import _C, _arguments
from kvdump._torch_errors import call_op
from kvdump.block_lists import IntsLike, layer_index, layer_op_arguments
from kvdump.closed_at_exit import close_at_exit
from kvdump.key_space import InKeySpace, KeySpace, resolve_key_space
from kvdump.writer import CycleReport
from kvdump.writer_options import EngineSettings, writer_options

_LOAD = torch.ops.kvdump.load_cache_store.default
_LOAD_ASYNC = torch.ops.kvdump.load_cache_store_async.default


class KVLoader(InKeySpace):
    """Decode-side loader: reads blocks of a layer from the store, checks each record's header and
    checksum, and scatters them into the caller's own block ids. The destination takes the forms
    ``write_cache_store`` accepts; a latent record never loads into a K/V cache, nor the reverse
    (:class:`KvdumpValueError` naming the layout).

    ``load`` is synchronous. For overlap, open a session with ``start``, ``load_async`` every layer,
    and ``wait_layer(i)`` right before layer ``i`` runs; worker threads do the reads meanwhile, and
    ``finish`` closes the session. Blocks are read from ``key_space`` (default
    ``kvdump.KeySpace()``; ``namespace``/``tp_rank``/``tp_size`` are its deprecated spelling). Its
    engine takes the writer's settings (:class:`kvdump.writer_options.EngineSettings`); one left out
    takes the library's default (``kvdump.WriterOptions()``). Thread-safe."""

    def __init__(
        self,
        store: _C.CacheStore,
        *,
        key_space: KeySpace | None = None,
        namespace: str | None = None,
        tp_rank: int | None = None,
        tp_size: int | None = None,
        **settings: Unpack[EngineSettings],
    ) -> None:
        _arguments.store("store", store)
        self._key_space = resolve_key_space(key_space, namespace, tp_rank, tp_size, caller="KVLoader")
        options = writer_options(**settings)
        self._store = store
        self._impl = _C.Loader(store, options, self._key_space)
        self._torch = torch.classes.kvdump.Loader(self._impl.offer_to_torch())
        close_at_exit(self)

    @property
    def store(self) -> _C.CacheStore:
        """The store this loader reads."""
        return self._store

    @property
    def key_space(self) -> KeySpace:
        """Where this loader reads blocks."""
        return self._key_space

    @property
    def state(self) -> str:
        """``"idle"``, or ``"accepting"`` while a session is open."""
        return self._impl.state

    @property
    def closed(self) -> bool:
        return self._impl.closed

    @property
    def torch_loader(self) -> torch.ScriptObject:
        """This loader as the ``torch.classes.kvdump.Loader`` that ``torch.ops.kvdump.load_cache_store``
        and ``load_cache_store_async`` take."""
        return self._torch

    @property
    def writer(self) -> _LoaderAsWriter:
        """Deprecated: the pool the loads ran on when a loader wrapped a writer. The loader has its
        own ``state``, ``store``, ``key_space``, ``stats()``, ``start``/``finish``/``abort``/``close``."""
        warnings.warn(
            "KVLoader.writer is deprecated: a loader runs on an engine of its own; use the loader's own "
            "state, store, key_space, stats(), start(), finish(), abort() and close()",
            DeprecationWarning,
            stacklevel=2,
        )
        return _LoaderAsWriter(self)

    def stats(self) -> dict[str, Any]:
        """The engine's cumulative counters, in :meth:`kvdump.AsyncWriter.stats`' shape: a session
        counts as a cycle and each queued load as a task (a synchronous ``load`` runs on the calling
        thread and counts nowhere); ``staging`` holds the staging pool's counters."""
        return self._impl.stats()

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
        self._call(_LOAD, layer, kv_cache, block_ids, block_hashes, v_cache)

    def start(self) -> None:
        """Open a loading session. :class:`LifecycleError` if one is open."""
        self._impl.open()

    def load_async(
        self,
        layer: int,
        kv_cache: torch.Tensor,
        block_ids: IntsLike,
        block_hashes: IntsLike,
        *,
        v_cache: torch.Tensor | None = None,
    ) -> None:
        """Queue one layer's load in the open session; ``wait_layer(layer)`` waits for it."""
        self._call(_LOAD_ASYNC, layer, kv_cache, block_ids, block_hashes, v_cache)

    def _call(
        self,
        op: Any,
        layer: int,
        kv_cache: torch.Tensor,
        block_ids: IntsLike,
        block_hashes: IntsLike,
        v_cache: torch.Tensor | None,
    ) -> None:
        call_op(op, self._torch, *layer_op_arguments(layer, kv_cache, v_cache, block_ids, block_hashes))

    def wait_layer(self, layer: int, timeout: float | None = None) -> None:
        """Block (GIL released) until ``layer`` is loaded; raises its error if it failed,
        :class:`WriteTimeout` when ``timeout`` passes, :class:`AbortedError` after ``abort()`` and
        :class:`LifecycleError` once the loader is closed (also for a thread already waiting)."""
        self._impl.wait_layer(layer_index(layer), _arguments.seconds("timeout", timeout, optional=True))

    def finish(self, timeout: float | None = None) -> CycleReport:
        """Close the session: wait for every queued load, raising the first failure."""
        return CycleReport(**self._impl.finish(_arguments.seconds("timeout", timeout, optional=True)))

    def abort(self, timeout: float | None = None) -> dict[str, Any]:
        """Cancel queued loads and abandon running ones after ``timeout`` (default: the loader's
        ``abort_timeout``); waiters get :class:`AbortedError`. An abandoned load never writes into
        the destination cache afterwards. Returns what it did, as :meth:`kvdump.AsyncWriter.abort`."""
        return self._impl.abort(_arguments.seconds("timeout", timeout, optional=True))

    def close(self, timeout: float | None = None) -> None:
        """Abort within ``timeout`` and stop the threads; waiters get :class:`LifecycleError`."""
        self._impl.close(_arguments.seconds("timeout", timeout, optional=True))

    def __enter__(self) -> KVLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "KVLoader(closed)" if self.closed else f"KVLoader(state={self.state!r}, key_space={self._key_space!r})"


class _LoaderAsWriter:
    """What ``KVLoader.writer`` returns while deprecated: the writer calls that code written against
    the old loader made on it, answered by the loader."""

    def __init__(self, loader: KVLoader) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:
        # state, store, key_space, namespace, tp_rank, tp_size, stats, abort, close, closed.
        return getattr(self._loader, name)

    def init(self) -> None:
        self._loader.start()

    def wait_all_done(self, timeout: float | None = None) -> CycleReport:
        return self._loader.finish(timeout)


def load_cache_store(
    store: _C.CacheStore,
    layer: int,
    kv_cache: torch.Tensor,
    block_ids: IntsLike,
    block_hashes: IntsLike,
    *,
    v_cache: torch.Tensor | None = None,
    key_space: KeySpace | None = None,
    namespace: str | None = None,
    tp_rank: int | None = None,
    tp_size: int | None = None,
) -> None:
    """Synchronously load one layer's blocks from ``store`` into ``kv_cache`` at ``block_ids``
    (the decode side's own ids), on the calling thread. Keeps nothing once it returns; to load many
    layers, a :class:`KVLoader` reuses its staging memory (and offers the asynchronous form)."""
    space = resolve_key_space(key_space, namespace, tp_rank, tp_size, caller="load_cache_store")
    with KVLoader(store, key_space=space, num_threads=1) as loader:
        loader.load(layer, kv_cache, block_ids, block_hashes, v_cache=v_cache)

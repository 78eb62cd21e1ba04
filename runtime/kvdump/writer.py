"""The Python face of the lifecycle writer: ``init`` / ``submit`` / ``wait_all_done`` / ``abort``."""

from __future__ import annotations

import atexit
import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch

from kvdump import _C
from kvdump.commit import publish
from kvdump.errors import WriteTimeout


class CycleReport(NamedTuple):
    """What a successful ``wait_all_done`` observed for the cycle it closed."""

    submitted: int
    completed: int
    failed: int
    cancelled: int


def default_staging_device() -> str:
    """The device type whose pinned host memory staging buffers use: the current accelerator
    (``cuda``, ``npu``, ...) when one is available, else ``cpu`` (pageable memory)."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and accelerator.is_available():
        current = accelerator.current_accelerator()
        if current is not None:
            return current.type
    return "cpu"


_live_writers: weakref.WeakSet[AsyncWriter] = weakref.WeakSet()
_live_lock = threading.Lock()


@atexit.register
def _close_live_writers() -> None:
    # Workers may be waiting for the GIL to run Python tasks; joining them must happen before the
    # interpreter tears down, not during it.
    with _live_lock:
        writers = list(_live_writers)
    for writer in writers:
        writer.close()


class AsyncWriter:
    """A C++ thread pool with a per-forward lifecycle.

    ``init()`` opens a cycle, ``submit()`` queues work (blocking up to ``submit_timeout`` seconds
    while the queue is full), ``wait_all_done()`` closes the cycle and raises :class:`WriteError` for
    the first failure, ``abort()`` cancels queued work and returns to idle. Thread-safe. Every
    blocking call releases the GIL; a worker takes the GIL only to run a Python callable.
    """

    def __init__(
        self,
        store: _C.CacheStore,
        *,
        num_threads: int | None = None,
        queue_capacity: int = 1024,
        submit_timeout: float = 30.0,
        staging_bytes: int = 256 << 20,
        staging_timeout: float = 30.0,
        namespace: str = "kvdump",
        tp_rank: int = 0,
        tp_size: int = 1,
        staging_device: str | None = None,
    ) -> None:
        if not isinstance(store, _C.CacheStore):
            raise TypeError(f"store must be a kvdump store (e.g. kvdump.MemoryStore), got {type(store).__name__}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 (or None for the default), got {num_threads}")
        self._store = store
        self._impl = _C.Writer(
            store,
            0 if num_threads is None else num_threads,
            queue_capacity,
            submit_timeout,
            staging_bytes,
            staging_timeout,
            namespace,
            tp_rank,
            tp_size,
            staging_device or default_staging_device(),
        )
        self.namespace = namespace
        self.tp_rank = tp_rank
        self.tp_size = tp_size
        # Blocks written in the open cycle, published (commit records) only when it succeeds.
        self._cycle_hashes: list[torch.Tensor] = []
        self._cycle_layers: set[int] = set()
        with _live_lock:
            _live_writers.add(self)

    @property
    def store(self) -> _C.CacheStore:
        """The store this writer puts into."""
        return self._store

    @property
    def state(self) -> str:
        """``"idle"``, ``"accepting"``, or (seen only from another thread) ``"draining"``/``"aborting"``."""
        return self._impl.state

    @property
    def handle(self) -> int:
        """The integer by which ``torch.ops.kvdump.*`` find this writer."""
        return self._impl.handle

    def init(self) -> None:
        """Open a cycle (idle -> accepting). :class:`LifecycleError` if one is open."""
        self._impl.init()
        self._forget_cycle()

    def submit(
        self,
        fn: Callable[[], Any],
        label: str = "",
        *,
        layer: int | None = None,
        request: str = "",
        timeout: float | None = None,
    ) -> None:
        """Queue ``fn`` to run on a worker with the GIL taken. Its exception, if any, is reported by
        ``wait_all_done``. Raises :class:`LifecycleError` outside a cycle and :class:`WriteTimeout`
        when the queue stays full past ``timeout`` (default: the writer's ``submit_timeout``)."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self._impl.submit(fn, label, -1 if layer is None else layer, request, timeout)

    def wait_all_done(self, timeout: float | None = None) -> CycleReport:
        """Close the cycle and wait for every task. Raises :class:`WriteError` (first failure, with
        ``.failed`` counting all) after returning to idle; :class:`WriteTimeout` when ``timeout``
        seconds pass first, leaving the cycle open (wait again or ``abort()``)."""
        try:
            report = CycleReport(**self._impl.wait_all_done(timeout))
        except WriteTimeout:
            raise  # the cycle stays open; its blocks may still be published by a later wait
        except BaseException:
            self._forget_cycle()
            raise
        self._publish_cycle()
        return report

    def abort(self) -> dict[str, Any]:
        """Cancel queued tasks, wait for running ones, release everything, return to idle. Returns
        what it did: ``cancelled``, ``finished_running``, ``failed``, ``first_failure``. Nothing
        written in the aborted cycle is published."""
        self._forget_cycle()
        return self._impl.abort()

    def cancel_request(self, request: str) -> int:
        """Cancel the queued tasks submitted with ``request=request``; returns how many."""
        return self._impl.cancel_request(request)

    def _note_written(self, layer: int, block_hashes: torch.Tensor) -> None:
        self._cycle_layers.add(layer)
        self._cycle_hashes.append(block_hashes)

    def _forget_cycle(self) -> None:
        self._cycle_hashes = []
        self._cycle_layers = set()

    def _publish_cycle(self) -> None:
        hashes, layers = self._cycle_hashes, self._cycle_layers
        self._forget_cycle()
        if not hashes:
            return
        if layers != set(range(len(layers))):
            # Layers 0..n-1 must all be present for a block to read as complete; a partial set is
            # stored but deliberately left unpublished.
            return
        unique = torch.cat([h.reshape(-1) for h in hashes]).tolist()
        publish(
            self._store,
            unique,
            len(layers),
            namespace=self.namespace,
            tp_rank=self.tp_rank,
            tp_size=self.tp_size,
        )

    @contextlib.contextmanager
    def cycle(self, timeout: float | None = None) -> Iterator[AsyncWriter]:
        """``init()``; on leaving, ``wait_all_done(timeout)``. If the body raises, or the barrier
        times out, ``abort()`` and re-raise, so the writer is idle and reusable either way."""
        self.init()
        try:
            yield self
        except BaseException:
            self.abort()
            raise
        try:
            self.wait_all_done(timeout)
        except WriteTimeout:
            self.abort()
            raise

    def stats(self) -> dict[str, Any]:
        """Cumulative counters: submitted, completed, failed, cancelled, rejected, cycles, aborts,
        queue_high_water, and latency summaries (submit, queue_wait, task, barrier_wait) in µs."""
        return self._impl.stats()

    def close(self) -> None:
        """Abort any open cycle (reporting what it cancelled on stderr) and stop the threads."""
        self._impl.close()

    @property
    def closed(self) -> bool:
        return self._impl.closed

    def __enter__(self) -> AsyncWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "AsyncWriter(closed)"
        s = self.stats()
        return (
            f"AsyncWriter(state={self.state!r}, threads={s['num_threads']}, store={self._store.name!r}, "
            f"namespace={self.namespace!r})"
        )

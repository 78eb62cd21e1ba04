"""The Python face of the lifecycle writer: ``init`` / ``submit`` / ``wait_all_done`` / ``abort``."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Unpack

import torch

from kvdump import _C, _arguments
from kvdump.closed_at_exit import close_at_exit
from kvdump.errors import KvdumpError, KvdumpTypeError, WriteTimeout
from kvdump.key_space import InKeySpace, KeySpace, resolve_key_space
from kvdump.writer_options import EngineSettings, writer_options

FULL_QUEUE_POLICIES = ("raise", "fail_request")


class CycleReport(NamedTuple):
    """What a successful ``wait_all_done`` observed for the cycle it closed."""

    submitted: int
    completed: int
    failed: int
    cancelled: int


def default_num_threads() -> int:
    """Workers when ``num_threads`` is not given: the cores that torch's intra-op threads leave to
    this process, 1 to 8, so the forward and the workers never oversubscribe the cores."""
    return _C.default_num_threads()


def default_idle_poll() -> float:
    """Seconds between an idle worker's looks at the queue when ``idle_poll`` is not given: 0.0005
    where torch's intra-op threads leave one of this process's cores free (the workers have a core of
    their own, so polling it preempts no forward thread, while waking a worker there costs the
    forward's thread a cross-CPU call), else 0 (each call wakes a worker)."""
    return _C.default_idle_poll()


class AsyncWriter(InKeySpace):
    """A C++ thread pool with a per-forward lifecycle.

    ``init()`` opens a cycle, ``submit()`` queues work (blocking up to ``submit_timeout`` seconds
    while the queue is full), ``wait_all_done()`` closes the cycle, publishes the commit records of
    every request whose blocks all stored, and raises :class:`WriteError` for the first failure;
    ``abort()`` cancels queued work and returns to idle. Thread-safe. Every blocking call releases
    the GIL and returns by its deadline whatever the store does: a task still running when
    ``abort()``'s deadline passes is abandoned (it never touches the caller's blocks again, and
    nothing it finishes later is published), and its thread is replaced, up to
    ``max_abandoned_threads`` threads left in abandoned calls.

    Blocks go under ``key_space`` (default ``kvdump.KeySpace()``; the loose ``namespace``,
    ``tp_rank`` and ``tp_size`` arguments are its deprecated spelling). The engine's settings are
    keyword arguments (:class:`kvdump.writer_options.EngineSettings`: ``num_threads``,
    ``queue_capacity``, ``submit_timeout``, ``staging_bytes``, ``staging_timeout``,
    ``staging_device``, ``abort_timeout``, ``max_abandoned_threads``, ``worker_nice``,
    ``idle_poll``); one left out takes the library's default (``kvdump.WriterOptions()`` shows
    them), and a bad one raises :class:`KvdumpTypeError` or :class:`KvdumpValueError` naming it.

    ``layers=(begin, end)`` declares the layers this writer stores (a pipeline stage); by default a
    block is published when every layer from 0 to the highest written in the cycle stored.

    Workers yield the cores to the forward: each runs in Linux's batch scheduling class with its
    nice value raised by ``worker_nice`` (1..19, default 10), so the kernel runs them where the
    forward leaves a core idle; ``worker_nice=0`` keeps the caller's priority (for a GPU server
    whose CPUs are mostly idle, where the workers should never wait). ``num_threads`` defaults to
    :func:`default_num_threads`. With ``idle_poll=0`` each call wakes a worker when none is running;
    with ``idle_poll`` seconds (e.g. 0.0005) one idle worker looks at the queue that often instead,
    so ``write_cache_store`` never pays for a wake-up: worth it where the CPUs are mostly idle (a GPU
    server), not where the forward keeps every core busy (each poll preempts it). Left out, it is
    :func:`default_idle_poll`: polls where torch's intra-op threads leave a core free, wake-ups
    where they take every core.
    """

    def __init__(
        self,
        store: _C.CacheStore,
        *,
        key_space: KeySpace | None = None,
        layers: tuple[int, int] | range | None = None,
        namespace: str | None = None,
        tp_rank: int | None = None,
        tp_size: int | None = None,
        **settings: Unpack[EngineSettings],
    ) -> None:
        _arguments.store("store", store)
        self._key_space = resolve_key_space(key_space, namespace, tp_rank, tp_size, caller="AsyncWriter")
        options = writer_options(**settings)
        layer_range = _arguments.layer_range("layers", layers)
        self._store = store
        self._impl = _C.Writer(store, options, self._key_space, layer_range)
        # What the torch ops take: the same writer as a torch custom class, claimed once here; and
        # the handle by which write_cache_store's C++ entry reaches it without torch.ops.
        self._torch = torch.classes.kvdump.Writer(self._impl.offer_to_torch())
        self._direct = _C.direct_writer_handle(self._impl.offer_to_torch())
        self.layers = layer_range
        # Save failures that a wrapped forward reported instead of raising (on_save_error="report").
        # The C++ core never sees that choice, so these counters live here; forwards on several
        # threads may share one writer, hence the lock.
        self._reported_lock = threading.Lock()
        self._save_failures_reported = 0
        self._requests_failed_reported = 0
        close_at_exit(self)

    @property
    def key_space(self) -> KeySpace:
        """Where this writer's blocks and commit records go."""
        return self._key_space

    @property
    def store(self) -> _C.CacheStore:
        """The store this writer puts into."""
        return self._store

    @property
    def state(self) -> str:
        """``"idle"``, ``"accepting"``, or (seen only from another thread) ``"draining"``/``"aborting"``."""
        return self._impl.state

    @property
    def torch_writer(self) -> torch.ScriptObject:
        """This writer as the ``torch.classes.kvdump.Writer`` that ``torch.ops.kvdump.*`` take
        (for calling the ops directly, e.g. from a compiled graph)."""
        return self._torch

    def init(self, *, full_queue: str = "raise") -> None:
        """Open a cycle (idle -> accepting). :class:`LifecycleError` if one is open.

        ``full_queue`` says what a write or submit does when the queue stays full for its whole
        ``submit_timeout`` (the store is stalled): ``"raise"`` a :class:`WriteTimeout`, or
        ``"fail_request"``: record the task as failed, so that the barrier reports it (naming its
        layer and request) and its request is not committed, and return; later full-queue submits of
        the cycle then fail the same way at once, without waiting. ``wrap_model(...,
        on_save_error="report")`` opens its cycles with ``"fail_request"``."""
        policy = _arguments.choice("full_queue", full_queue, FULL_QUEUE_POLICIES)
        self._impl.init(policy == "fail_request")

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
            raise KvdumpTypeError(f"fn must be callable, got {type(fn).__name__} {fn!r}")
        self._impl.submit(
            fn,
            _arguments.text("label", label),
            -1 if layer is None else _arguments.integer("layer", layer, minimum=0, maximum=2**31 - 1),
            _arguments.text("request", request),
            _arguments.seconds("timeout", timeout, optional=True),
        )

    def wait_all_done(self, timeout: float | None = None) -> CycleReport:
        """Close the cycle, wait for every task, then publish the commit records (the cycle's last
        task). Raises :class:`WriteError` (first failure, with ``.failed`` counting all and
        ``.failed_requests`` naming every failed request, none of which is published) after
        returning to idle; requests that succeeded are published all the same.
        :class:`WriteTimeout` when ``timeout`` seconds pass first, naming the oldest running task and
        the store key it waits on; the cycle stays open (wait again or ``abort()``)."""
        return CycleReport(**self._impl.wait_all_done(_arguments.seconds("timeout", timeout, optional=True)))

    def abort(self, timeout: float | None = None) -> dict[str, Any]:
        """Cancel queued tasks, let running ones finish until ``timeout`` seconds (default: the
        writer's ``abort_timeout``) pass, then abandon the rest; return to idle. Returns what it
        did: ``cancelled``, ``finished_running``, ``abandoned``, ``failed``, ``first_failure``,
        ``first_abandoned``. Nothing written in the aborted cycle is published."""
        return self._impl.abort(_arguments.seconds("timeout", timeout, optional=True))

    def cancel_request(self, request: str) -> int:
        """Cancel the queued tasks submitted with ``request=request``; returns how many. Nothing of
        the request is published in this cycle, even what already stored."""
        return self._impl.cancel_request(_arguments.text("request", request))

    @contextlib.contextmanager
    def cycle(self, timeout: float | None = None, *, full_queue: str = "raise") -> Iterator[AsyncWriter]:
        """``init(full_queue=full_queue)``; on leaving, ``wait_all_done(timeout)``. If the body
        raises, or the barrier times out, ``abort()`` and re-raise, so the writer is idle and
        reusable either way. The barrier and the abort share ``timeout``: leaving takes at most
        ``timeout`` seconds (plus the end of a gather in progress), whatever the store does."""
        deadline_s = _arguments.seconds("timeout", timeout, optional=True)
        self.init(full_queue=full_queue)
        try:
            yield self
        except BaseException:
            self.abort(deadline_s)
            raise
        start = time.monotonic()
        try:
            self.wait_all_done(deadline_s)
        except BaseException as error:
            # A barrier that timed out, or was interrupted (Ctrl-C), leaves the cycle open, and nobody
            # will wait again; any other kvdump error already left the writer idle.
            if isinstance(error, WriteTimeout) or not isinstance(error, KvdumpError):
                self.abort(None if deadline_s is None else max(0.0, deadline_s - (time.monotonic() - start)))
            raise

    def stats(self) -> dict[str, Any]:
        """Cumulative counters: submitted, completed, failed, cancelled, rejected, abandoned, cycles,
        aborts, queue_high_water, threads_in_abandoned_calls, threads_started, latency summaries
        (submit, queue_wait, task, barrier_wait) in µs, and the save failures reported instead of
        raised (``on_save_error="report"``): ``save_failures_reported`` (cycles) and
        ``requests_failed_reported`` (the requests those failures named). ``store`` holds the
        store's own counters when it keeps any (a MemoryStore: capacity, used, entries, hits,
        misses, evictions, reclaimed, leased and its policy)."""
        stats = self._impl.stats()
        with self._reported_lock:
            stats["save_failures_reported"] = self._save_failures_reported
            stats["requests_failed_reported"] = self._requests_failed_reported
        store_stats = getattr(self._store, "stats", None)
        if callable(store_stats):
            stats["store"] = store_stats()
        return stats

    def _count_reported_save_failure(self, failed_requests: int) -> None:
        """Count one cycle whose save failure was reported instead of raised, naming
        ``failed_requests`` requests (kvdump.save_policy calls this)."""
        with self._reported_lock:
            self._save_failures_reported += 1
            self._requests_failed_reported += failed_requests

    def close(self, timeout: float | None = None) -> None:
        """Abort any open cycle within ``timeout`` seconds (default: ``abort_timeout``), wake every
        waiter with :class:`LifecycleError`, and stop the threads. Idempotent."""
        self._impl.close(_arguments.seconds("timeout", timeout, optional=True))

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

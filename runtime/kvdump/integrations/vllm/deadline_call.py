"""Calls into a store that return by a deadline, whatever the store does.

vLLM's scheduler asks for matched tokens on its one thread; a store that stalls there would stall
every request. The call runs on a daemon thread instead, and the caller waits at most its deadline;
while a stalled call is still inside the store, later calls fail at once instead of queueing
behind it."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from kvdump.errors import WriteTimeout

T = TypeVar("T")


class DeadlineCaller:
    """Runs one call at a time on its own daemon thread; thread-safe."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stalled: Future | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            fn, future = self._calls.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as error:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(error)

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        """``fn()``'s result or exception; :class:`kvdump.WriteTimeout` when ``timeout`` seconds pass
        first, or at once while an earlier call that timed out is still running."""
        with self._lock:
            if self._stalled is not None and not self._stalled.done():
                raise WriteTimeout(f"{self._name}: an earlier call is still inside the store")
            future: Future = Future()
            self._calls.put((fn, future))
        try:
            return future.result(timeout)
        except FutureTimeout:
            with self._lock:
                self._stalled = future
            raise WriteTimeout(f"{self._name}: no answer within {timeout:.3f} s") from None


class InlineCaller:
    """:class:`DeadlineCaller`'s interface for calls that cannot stall: runs them on the caller's
    thread, sparing the hand-over to another thread."""

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        return fn()

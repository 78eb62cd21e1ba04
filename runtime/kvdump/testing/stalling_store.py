"""A store that holds the puts and gets a predicate picks until released: a stalled remote store,
so that a test or benchmark keeps a call in flight for as long as it needs, and knows it is in
flight, instead of guessing with a sleep how long a call takes."""

from __future__ import annotations

import threading
from collections.abc import Callable

from kvdump import _C
from kvdump.testing.forwarding_store import ForwardingStore


def every_key(key: str) -> bool:
    return True


def no_key(key: str) -> bool:
    return False


class StallingStore(ForwardingStore):
    """Holds each put for which ``holds_put(key)`` is true, and each get for which ``holds_get(key)``
    is, until ``release`` is set, then forwards it to ``inner`` (by default a 64 MiB MemoryStore).
    ``entered`` is set when a call is first held; ``held`` counts the calls held right now. Setting
    ``stalling`` to False lets every call through. A call never released is held at most ``limit``
    seconds, so a test with a bug fails instead of hanging; it then raises TimeoutError, or, with
    ``fails_at_limit=False``, goes through as if released (a store that is slow, not broken)."""

    def __init__(
        self,
        inner: _C.CacheStore | None = None,
        *,
        holds_put: Callable[[str], bool] = every_key,
        holds_get: Callable[[str], bool] = every_key,
        limit: float = 30.0,
        fails_at_limit: bool = True,
    ) -> None:
        super().__init__("stalling", inner if inner is not None else _C.MemoryStore(capacity_bytes=64 << 20))
        self.holds_put = holds_put
        self.holds_get = holds_get
        self.limit = limit
        self.fails_at_limit = fails_at_limit
        self.stalling = True
        self.entered = threading.Event()
        self.release = threading.Event()
        self.held = 0
        self._lock = threading.Lock()

    def _hold(self, key: str, holds: Callable[[str], bool]) -> None:
        if not (self.stalling and holds(key)):
            return
        with self._lock:
            self.held += 1
        self.entered.set()
        try:
            released = self.release.wait(self.limit)
        finally:
            with self._lock:
                self.held -= 1
        if not released and self.fails_at_limit:
            raise TimeoutError(f"stalled store call for {key!r} never released within {self.limit} s")

    def put(self, key: str, value: memoryview) -> None:
        self._hold(key, self.holds_put)
        super().put(key, value)

    def get(self, key: str) -> bytes | None:
        self._hold(key, self.holds_get)
        return super().get(key)

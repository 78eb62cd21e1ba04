"""Helpers shared by the test modules: the one bound on every wait, a blocking task, and small checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import kvdump
from forwarding_store import ForwardingStore

# Every wait in these tests is bounded, so that a bug fails a test instead of hanging it.
LIMIT = 30.0


class Gate:
    """A task that announces it started, then blocks until released (at most LIMIT seconds)."""

    live: list[Gate] = []

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        Gate.live.append(self)

    def __call__(self) -> None:
        self.started.set()
        if not self.release.wait(LIMIT):
            raise TimeoutError("gate never released")
        self.finished.set()


class GatedStore(ForwardingStore):
    """A store whose every put and get announces itself (``entered``), then blocks until ``release``
    is set (at most LIMIT seconds, then fails), before forwarding to a native store. While a task
    is blocked in it, the task is certainly still running: no sleep has to guess how long a call
    takes."""

    def __init__(self, inner: kvdump.CacheStore | None = None) -> None:
        super().__init__("gated", inner if inner is not None else kvdump.MemoryStore(capacity_bytes=64 << 20))
        self.entered = threading.Event()
        self.release = threading.Event()

    def _gate(self) -> None:
        self.entered.set()
        if not self.release.wait(LIMIT):
            raise TimeoutError("gated store never released")

    def put(self, key: str, value: memoryview) -> None:
        self._gate()
        super().put(key, value)

    def get(self, key: str) -> bytes | None:
        self._gate()
        return super().get(key)


def raiser(exc: BaseException) -> Callable[[], None]:
    """A task that raises ``exc``."""

    def run() -> None:
        raise exc

    return run


def wait_until(predicate: Callable[[], bool], limit: float = LIMIT) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.001)
    return predicate()


def assert_usable(writer: kvdump.AsyncWriter) -> None:
    """One full cycle runs on ``writer`` and leaves it idle."""
    ran = threading.Event()
    writer.init()
    writer.submit(ran.set, label="probe")
    assert writer.wait_all_done(timeout=LIMIT).completed == 1
    assert ran.is_set()
    assert writer.state == "idle"

"""Helpers shared by the writer test modules: a blocking task, and small checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import kvdump

# Every wait in these tests is bounded, so that a bug fails a test instead of hanging it.
LIMIT = 10.0


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

"""Helpers shared by the test modules: the one bound on every wait, a blocking task, small checks,
and every kind of store the shared conformance suite runs against."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import kvdump
from kvdump.testing import DictStore

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


def hold_a_worker(writer: kvdump.AsyncWriter, label: str = "gate") -> Gate:
    """Opens a cycle on ``writer`` whose first task is a Gate, and returns the gate once it runs: on a
    one-worker writer every task submitted after it queues until ``gate.release`` is set."""
    gate = Gate()
    writer.init()
    writer.submit(gate, label=label)
    assert gate.started.wait(LIMIT)
    return gate


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


# --- store kinds ----------------------------------------------------------------------------------

STORE_KINDS = ["memory", "file", "delayed", "python", "mooncake"]

# Documented differences, each tested for what the store does instead (see MooncakeStore):
FIRST_WRITER_WINS = {"mooncake"}  # a put of an existing key keeps the stored value
NO_EMPTY_VALUES = {"mooncake"}  # an empty value is refused with UnsupportedError
READS_TAKE_LEASES = {"mooncake"}  # a read blocks remove() for a while (LeaseHeldError)


def mooncake_available() -> bool:
    try:
        import mooncake.store  # noqa: F401
    except ImportError:
        return False
    return True


def require_mooncake() -> None:
    """Skip without Mooncake locally; in CI its absence is a set-up error, never a silent skip."""
    if not mooncake_available():
        if os.environ.get("CI"):
            pytest.fail("Mooncake is not installed in CI (scripts/setup.sh must install it)")
        pytest.skip("mooncake-transfer-engine-non-cuda is not installed")


def make_store(kind: str, tmp_path: Path, mooncake_store: Callable[[], kvdump.CacheStore]) -> kvdump.CacheStore:
    """A fresh store of ``kind`` (one of STORE_KINDS); Mooncake's comes from ``mooncake_store``."""
    if kind == "memory":
        return kvdump.MemoryStore(64 << 20)
    if kind == "file":
        return kvdump.FileStore(str(tmp_path / "files"))
    if kind == "delayed":
        return kvdump.DelayedStore(kvdump.MemoryStore(64 << 20), put_delay=0.0005, get_delay=0.0005)
    if kind == "python":
        return DictStore()
    if kind == "mooncake":
        return mooncake_store()
    raise ValueError(kind)

"""Fixtures shared by the test modules."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import kvdump
import pytest
from writer_support import Gate


@pytest.fixture
def make_writer() -> Iterator[Callable[..., kvdump.AsyncWriter]]:
    """Makes writers (default: a 1 MiB MemoryStore, 2 threads) and closes them after the test. Gates
    and the events in ``make.events`` are released first, so a failed test never leaves a worker
    blocked at teardown."""
    writers: list[kvdump.AsyncWriter] = []
    events: list[threading.Event] = []

    def make(**kwargs: object) -> kvdump.AsyncWriter:
        store = kwargs.pop("store", None) or kvdump.MemoryStore(capacity_bytes=1 << 20)
        kwargs.setdefault("num_threads", 2)
        writer = kvdump.AsyncWriter(store, **kwargs)  # type: ignore[arg-type]
        writers.append(writer)
        return writer

    make.events = events  # type: ignore[attr-defined]
    yield make
    for gate in Gate.live:
        gate.release.set()
    Gate.live.clear()
    for event in events:
        event.set()
    for writer in writers:
        writer.close()

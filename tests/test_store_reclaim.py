"""What a cycle stored but will never commit (its request failed, or the cycle was aborted or its
writer closed) is given back to a MemoryStore, which reclaims it before anything committed, under
either policy. Without that, a store that refuses to evict would fill with dead blocks for good."""

from __future__ import annotations

import sys
import threading

import pytest
import torch

import kvdump
from kvdump.testing import ForwardingStore

LAYERS = 2
BLOCKS = 4
SHAPE = (2, BLOCKS, 16, 2, 64)  # 8 KiB of K+V per block record (fp32)
RECORD = 2 * 16 * 2 * 64 * 4 + 64


def kv(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(SHAPE, generator=g) for _ in range(LAYERS)]


def write(writer: kvdump.AsyncWriter, layers: list[torch.Tensor], hashes: list[int], request: str) -> None:
    for layer, t in enumerate(layers):
        kvdump.write_cache_store(writer, layer, t, list(range(len(hashes))), hashes, request=request)


def refusing_store(requests: float) -> kvdump.MemoryStore:
    """Room for `requests` requests of BLOCKS blocks x LAYERS layers (and their commit records)."""
    capacity = int(requests * BLOCKS * (LAYERS * RECORD + 48))
    return kvdump.MemoryStore(
        capacity_bytes=capacity, eviction="refuse", slab_bytes=RECORD * 4, high_watermark=1.0, low_watermark=1.0
    )


def through(store: kvdump.MemoryStore, wrapped: bool) -> kvdump.CacheStore:
    # A Python store over the MemoryStore passes the writer's discard on, as it passes puts.
    return ForwardingStore("forwarding", store) if wrapped else store


@pytest.mark.parametrize("wrapped", [False, True], ids=["native", "through_python_store"])
@pytest.mark.parametrize("end", ["abort", "close"])
def test_an_aborted_or_closed_cycle_gives_its_blocks_back(end: str, wrapped: bool) -> None:
    store = refusing_store(1.5)
    writer = kvdump.AsyncWriter(through(store, wrapped), num_threads=1)
    writer.init()
    write(writer, kv(1), [1, 2, 3, 4], "dead")
    # One worker runs tasks in order: once this one starts, every layer above has stored.
    started, release = threading.Event(), threading.Event()
    writer.submit(lambda: (started.set(), release.wait(30)), label="hold the cycle open")
    assert started.wait(30)
    assert store.stats()["entries"] == BLOCKS * LAYERS  # stored, not committed
    if end == "abort":
        writer.abort(timeout=0)
    else:
        writer.close(timeout=0)
    release.set()
    if end == "close":
        writer = kvdump.AsyncWriter(through(store, wrapped), num_threads=1)
    assert kvdump.lookup(store, [1, 2, 3, 4], num_layers=LAYERS) == 0
    try:
        # A refusing store full of the dead cycle's blocks still takes a new request: it reclaims them.
        with writer.cycle(timeout=30):
            write(writer, kv(2), [5, 6, 7, 8], "live")
    finally:
        writer.close()
    stats = store.stats()
    assert stats["reclaimed"] > 0 and stats["evictions"] == 0 and stats["rejected_full"] == 0
    assert kvdump.lookup(store, [5, 6, 7, 8], num_layers=LAYERS) == 4


@pytest.mark.parametrize("wrapped", [False, True], ids=["native", "through_python_store"])
def test_a_failed_requests_partial_blocks_are_reclaimed_and_committed_ones_kept(wrapped: bool) -> None:
    store = refusing_store(1.5)
    with kvdump.AsyncWriter(through(store, wrapped), num_threads=1) as writer:
        with writer.cycle(timeout=30):
            write(writer, kv(1), [1, 2, 3, 4], "first")
        # Half a request's room is left: the second fails part-way, with STORE_FULL.
        with pytest.raises(kvdump.WriteError) as failed:
            with writer.cycle(timeout=30):
                write(writer, kv(2), [11, 12, 13, 14], "second")
        assert failed.value.code is kvdump.StatusCode.STORE_FULL
        assert failed.value.failed_requests == ("second",)
        assert store.stats()["reclaimed"] == 0
        # The third fits only in what the second left behind.
        with writer.cycle(timeout=30):
            write(writer, kv(3), [21, 22], "third")
    stats = store.stats()
    assert stats["reclaimed"] > 0 and stats["evictions"] == 0
    assert kvdump.lookup(store, [1, 2, 3, 4], num_layers=LAYERS) == 4  # committed: never reclaimed
    assert kvdump.lookup(store, [11, 12, 13, 14], num_layers=LAYERS) == 0
    assert kvdump.lookup(store, [21, 22], num_layers=LAYERS) == 2


class DiscardRecorder(kvdump.PythonStore):
    """Keeps values in a dict and records every discard it is told, raising on the first if asked."""

    def __init__(self, raise_on_discard: bool = False) -> None:
        super().__init__("recorder")
        self.values: dict[str, bytes] = {}
        self.discarded: list[str] = []
        self.raise_on_discard = raise_on_discard

    def put(self, key: str, value: memoryview) -> None:
        self.values[key] = bytes(value)

    def get(self, key: str) -> bytes | None:
        return self.values.get(key)

    def exists(self, key: str) -> bool:
        return key in self.values

    def remove(self, key: str) -> bool:
        return self.values.pop(key, None) is not None

    def discard(self, keys: list[str]) -> None:
        self.discarded.extend(keys)
        if self.raise_on_discard:
            raise RuntimeError("discard refused")


@pytest.mark.parametrize("raise_on_discard", [False, True])
def test_a_python_store_is_told_which_blocks_of_an_aborted_cycle_will_never_be_committed(
    raise_on_discard: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(f"{u.object}: {u.exc_value}"))
    store = DiscardRecorder(raise_on_discard)
    with kvdump.AsyncWriter(store, num_threads=1) as writer:
        writer.init()
        write(writer, kv(1), [1, 2], "dead")
        started, release = threading.Event(), threading.Event()
        writer.submit(lambda: (started.set(), release.wait(30)), label="hold the cycle open")
        assert started.wait(30)
        # A discard that raises is advice lost, never the abort's failure.
        writer.abort(timeout=0)
        release.set()
        stored = sorted(k for k in store.values if not k.endswith("commit"))
        assert len(stored) == 2 * LAYERS
        assert sorted(store.discarded) == stored
        assert unraisable == (
            ["kvdump: discard() of Python store 'recorder': discard refused"] if raise_on_discard else []
        )
        # The writer goes on: the next cycle commits, and nothing of it is discarded.
        store.discarded.clear()
        with writer.cycle(timeout=30):
            write(writer, kv(2), [3, 4], "live")
        assert store.discarded == []
        assert kvdump.lookup(store, [3, 4], num_layers=LAYERS) == 2


def test_a_block_reclaimed_before_its_commit_fails_its_request_instead_of_publishing() -> None:
    store = refusing_store(1.5)
    with kvdump.AsyncWriter(store, num_threads=1) as writer:
        writer.init()
        write(writer, kv(1), [1, 2, 3, 4], "r")
        started, release = threading.Event(), threading.Event()
        writer.submit(lambda: (started.set(), release.wait(30)), label="hold the cycle open")
        assert started.wait(30)
        # Another writer's discard under the same keys (or a stale one) makes the stored blocks
        # reclaimable before this cycle commits them, and a put that needs the room takes them.
        keys = [kvdump.KeySpace().block_key(h, layer) for h in (1, 2, 3, 4) for layer in range(LAYERS)]
        store.discard(keys)
        for i in range(6):  # the room holds 12 records; 8 are the cycle's
            store.put(f"other/{i}", bytes(RECORD))
        assert store.stats()["reclaimed"] > 0
        release.set()
        with pytest.raises(kvdump.WriteError) as failed:
            writer.wait_all_done(timeout=30)
    assert failed.value.code is kvdump.StatusCode.NOT_FOUND
    assert failed.value.key.endswith("/commit")
    assert kvdump.lookup(store, [1, 2, 3, 4], num_layers=LAYERS) == 0

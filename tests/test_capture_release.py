"""The tensors that write_cache_store captures are held only while their task is alive: released after
the cycle's barrier, after abort() (queued tasks cancelled), after a failed cycle, and on close().

Two probes: a weak reference to the Python tensor (dead once nothing holds it), and the use count of
the tensor's storage (the captured K/V views hold it while the task is alive)."""

from __future__ import annotations

import gc
import time
import weakref

import pytest
import torch

import kvdump

LIMIT = 30.0
SHAPE = (2, 8, 4, 2, 16)  # [2, blocks, block_size, heads, head_dim]


def storage_refs(t: torch.Tensor) -> int:
    """How many tensors (views included) share ``t``'s storage."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def collect_until_dead(ref: weakref.ref, seconds: float = 3.0) -> bool:
    """True once ``ref`` is dead. One gc pass should do; the deadline bounds a bug instead of hanging."""
    deadline = time.monotonic() + seconds
    while True:
        gc.collect()
        if ref() is None:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def slow_store(put_delay: float = 0.2) -> kvdump.CacheStore:
    return kvdump.DelayedStore(kvdump.MemoryStore(capacity_bytes=16 << 20), put_delay=put_delay)


def test_tensors_are_released_after_the_cycle(make_writer) -> None:
    writer = make_writer(slow_store(put_delay=0.05), num_threads=1)
    kv = torch.randn(SHAPE)
    ref = weakref.ref(kv)
    baseline = storage_refs(kv)

    writer.init()
    kvdump.write_cache_store(writer, 0, kv, [1, 5, 2], [11, 15, 12])
    # The task, still running (its put sleeps), holds K and V views: the probe sees the capture.
    assert storage_refs(kv) > baseline
    writer.wait_all_done(timeout=LIMIT)
    assert storage_refs(kv) == baseline  # released by the time the barrier returns

    del kv
    assert collect_until_dead(ref)


def test_separate_k_and_v_are_released_after_the_cycle(make_writer) -> None:
    writer = make_writer(slow_store(put_delay=0.2), num_threads=1)
    k, v = torch.randn(SHAPE[1:]), torch.randn(SHAPE[1:])
    refs = [weakref.ref(k), weakref.ref(v)]

    writer.init()
    kvdump.write_cache_store(writer, 0, k, [1, 5, 2], [11, 15, 12], v_cache=v)
    del k, v
    gc.collect()
    # The running task holds the very tensors (torch keeps their Python objects alive with them).
    assert all(r() is not None for r in refs)
    writer.wait_all_done(timeout=LIMIT)
    assert all(collect_until_dead(r) for r in refs)


def test_tensors_are_released_after_abort_with_queued_tasks(make_writer) -> None:
    writer = make_writer(slow_store(put_delay=0.2), num_threads=1)
    layers = [torch.randn(SHAPE) for _ in range(4)]
    refs = [weakref.ref(kv) for kv in layers]
    baselines = [storage_refs(kv) for kv in layers]

    writer.init()
    for layer, kv in enumerate(layers):
        kvdump.write_cache_store(writer, layer, kv, [0, 3], [100 + layer, 200 + layer])
    assert [storage_refs(kv) for kv in layers] > baselines  # captured
    report = writer.abort()
    # One thread, a 0.2 s put: at most one task was running, the others were still queued.
    assert report["cancelled"] >= 3
    assert report["cancelled"] + report["finished_running"] == 4
    assert writer.state == "idle"
    assert [storage_refs(kv) for kv in layers] == baselines  # released by the time abort returns

    del layers, kv
    assert all(collect_until_dead(r) for r in refs)
    assert kvdump.lookup(writer.store, [100, 101, 102, 103]) == 0


def test_tensors_are_released_after_a_failed_cycle(make_writer) -> None:
    writer = make_writer(kvdump.MemoryStore(capacity_bytes=256), num_threads=1)  # nothing fits
    kv = torch.randn(SHAPE)
    ref = weakref.ref(kv)
    baseline = storage_refs(kv)
    writer.init()
    kvdump.write_cache_store(writer, 0, kv, [0, 1], [1, 2])
    with pytest.raises(kvdump.WriteError) as info:
        writer.wait_all_done(timeout=LIMIT)
    assert info.value.code is kvdump.StatusCode.STORE_FULL
    assert storage_refs(kv) == baseline
    del kv
    assert collect_until_dead(ref)


def test_tensors_are_released_when_an_open_cycle_is_closed(make_writer, capfd) -> None:
    writer = make_writer(slow_store(put_delay=0.2), num_threads=1)
    layers = [torch.randn(SHAPE) for _ in range(3)]
    refs = [weakref.ref(kv) for kv in layers]
    writer.init()
    for layer, kv in enumerate(layers):
        kvdump.write_cache_store(writer, layer, kv, [0], [layer])
    writer.close()
    assert "cancelled" in capfd.readouterr().err
    del layers, kv
    assert all(collect_until_dead(r) for r in refs)


def test_tensors_of_a_cycle_aborted_by_a_raising_forward_are_released(make_writer) -> None:
    writer = make_writer(slow_store(put_delay=0.1), num_threads=1)
    kv = torch.randn(SHAPE)
    ref = weakref.ref(kv)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with writer.cycle(timeout=LIMIT):
            kvdump.write_cache_store(writer, 0, kv, [0, 1], [1, 2])
            kvdump.write_cache_store(writer, 1, kv, [0, 1], [1, 2])
            raise Boom
    assert writer.state == "idle"
    del kv
    assert collect_until_dead(ref)

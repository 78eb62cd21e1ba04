"""The KV memory that write_cache_store captures is held only until its blocks are gathered: a
queued task holds it, a task blocked in its store put has already let go, and nothing is held
after the cycle's barrier, abort() (queued tasks cancelled), a failed cycle, or close().

Two probes: a weak reference to the caller's tensor (dead once the caller drops it and nothing
else holds it), and the use count of the tensor's storage, which the op holds once while its task
needs the blocks. The op is given fresh views (``captured(kv)``), so the storage count rises by
exactly the op's hold. A task is kept alive by blocking its store put on an event (StallingStore), never by a
delay: how long a delay covers depends on the machine, and only the release itself is guaranteed,
by the time the barrier, abort() or close() returns."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch

import kvdump
from kvdump.testing import StallingStore
from support import LIMIT, wait_until

SHAPE = (2, 8, 4, 2, 16)  # [2, blocks, block_size, heads, head_dim]


def captured(t: torch.Tensor) -> torch.Tensor:
    """A new tensor over ``t``'s storage that only the op keeps once the call returns."""
    return t.view(t.shape)


def storage_refs(t: torch.Tensor) -> int:
    """How many tensors (views included) share ``t``'s storage."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def is_dead(ref: weakref.ref) -> bool:
    """True when nothing holds ``ref``'s object any more (one gc pass for stray cycles)."""
    gc.collect()
    return ref() is None


def gated_store(make_writer) -> StallingStore:
    store = StallingStore()
    make_writer.events.append(store.release)  # a failed test never leaves a worker blocked
    return store


def release_when(store: StallingStore, condition) -> threading.Thread:
    """Releases ``store`` from another thread once ``condition()`` holds (the caller is about to block
    in a call that waits for the blocked task)."""
    thread = threading.Thread(target=lambda: wait_until(condition) and store.release.set())
    thread.start()
    return thread


def test_tensors_are_released_after_the_cycle(make_writer) -> None:
    store = gated_store(make_writer)
    writer = make_writer(store, num_threads=1)
    kv = torch.randn(SHAPE)
    ref = weakref.ref(kv)
    baseline = storage_refs(kv)

    writer.init()
    kvdump.write_cache_store(writer, 0, captured(kv), [1, 5, 2], [11, 15, 12])
    assert store.entered.wait(LIMIT)
    # The task is blocked in the store's put, its blocks already gathered: it holds nothing of kv,
    # so the caller may reuse those blocks however long the store takes.
    assert storage_refs(kv) == baseline
    store.release.set()
    writer.wait_all_done(timeout=LIMIT)
    assert storage_refs(kv) == baseline  # released by the time the barrier returns

    del kv
    assert is_dead(ref)


def test_separate_k_and_v_are_released_after_the_cycle(make_writer) -> None:
    store = gated_store(make_writer)
    writer = make_writer(store, num_threads=1)
    k, v = torch.randn(SHAPE[1:]), torch.randn(SHAPE[1:])
    refs = [weakref.ref(k), weakref.ref(v)]

    writer.init()
    kvdump.write_cache_store(writer, 0, k, [1, 5, 2], [11, 15, 12], v_cache=v)
    assert store.entered.wait(LIMIT)
    del k, v
    # The task, blocked in the store's put, gathered before it: K and V are already free.
    assert all(is_dead(r) for r in refs)
    store.release.set()
    writer.wait_all_done(timeout=LIMIT)


def test_tensors_are_released_after_abort_with_queued_tasks(make_writer) -> None:
    store = gated_store(make_writer)
    writer = make_writer(store, num_threads=1)
    layers = [torch.randn(SHAPE) for _ in range(4)]
    refs = [weakref.ref(kv) for kv in layers]
    baselines = [storage_refs(kv) for kv in layers]

    writer.init()
    for layer, kv in enumerate(layers):
        kvdump.write_cache_store(writer, layer, captured(kv), [0, 3], [100 + layer, 200 + layer])
    assert store.entered.wait(LIMIT)
    # Layer 0's task is blocked in the store, past its gather; the other three are queued behind it
    # (one thread) and still hold their layers.
    assert storage_refs(layers[0]) == baselines[0]
    assert all(storage_refs(kv) > b for kv, b in zip(layers[1:], baselines[1:]))
    releaser = release_when(store, lambda: writer.state == "aborting")
    report = writer.abort()  # cancels the queued tasks, then waits for the running one
    releaser.join(LIMIT)
    assert report["cancelled"] == 3
    assert report["finished_running"] == 1
    assert writer.state == "idle"
    assert [storage_refs(kv) for kv in layers] == baselines  # released by the time abort returns

    del layers, kv
    assert all(is_dead(r) for r in refs)
    assert kvdump.lookup(writer.store, [100, 101, 102, 103]) == 0


def test_tensors_are_released_after_a_failed_cycle(make_writer) -> None:
    writer = make_writer(kvdump.MemoryStore(capacity_bytes=256), num_threads=1)  # nothing fits
    kv = torch.randn(SHAPE)
    ref = weakref.ref(kv)
    baseline = storage_refs(kv)
    writer.init()
    kvdump.write_cache_store(writer, 0, captured(kv), [0, 1], [1, 2])
    with pytest.raises(kvdump.WriteError) as info:
        writer.wait_all_done(timeout=LIMIT)
    assert info.value.code is kvdump.StatusCode.STORE_FULL
    assert storage_refs(kv) == baseline
    del kv
    assert is_dead(ref)


def test_tensors_are_released_when_an_open_cycle_is_closed(make_writer, capfd) -> None:
    store = gated_store(make_writer)
    writer = make_writer(store, num_threads=1)
    layers = [torch.randn(SHAPE) for _ in range(3)]
    refs = [weakref.ref(kv) for kv in layers]
    baselines = [storage_refs(kv) for kv in layers]
    writer.init()
    for layer, kv in enumerate(layers):
        kvdump.write_cache_store(writer, layer, captured(kv), [0], [layer])
    assert store.entered.wait(LIMIT)
    # close() cancels the two queued tasks (dropping their captures), then waits for the blocked one.
    queued = list(zip(layers[1:], baselines[1:]))
    releaser = release_when(store, lambda: all(storage_refs(kv) == b for kv, b in queued))  # noqa: F821
    writer.close()
    releaser.join(LIMIT)
    assert "cancelled 2 queued task(s), waited for 1 running task(s)" in capfd.readouterr().err
    del layers, kv, queued
    assert all(is_dead(r) for r in refs)


def test_tensors_of_a_cycle_aborted_by_a_raising_forward_are_released(make_writer) -> None:
    store = gated_store(make_writer)
    writer = make_writer(store, num_threads=1)
    kv = torch.randn(SHAPE)
    ref = weakref.ref(kv)

    class Boom(Exception):
        pass

    releaser = release_when(store, lambda: writer.state == "aborting")
    with pytest.raises(Boom):
        with writer.cycle(timeout=LIMIT):
            kvdump.write_cache_store(writer, 0, kv, [0, 1], [1, 2])
            kvdump.write_cache_store(writer, 1, kv, [0, 1], [1, 2])
            assert store.entered.wait(LIMIT)  # layer 0 running, layer 1 queued when the forward fails
            raise Boom
    releaser.join(LIMIT)
    assert writer.state == "idle"
    del kv
    assert is_dead(ref)


def test_a_cache_resized_before_its_gather_fails_its_layer_and_is_never_read(make_writer) -> None:
    store = gated_store(make_writer)
    writer = make_writer(store, num_threads=1)
    first, second = torch.randn(SHAPE), torch.randn(SHAPE)
    writer.init()
    kvdump.write_cache_store(writer, 0, first, [0], [10])
    assert store.entered.wait(LIMIT)  # layer 0 sits in its put, so layer 1 waits in the queue
    kvdump.write_cache_store(writer, 1, second, [0], [11])
    second.untyped_storage().resize_(0)  # its memory is freed while the task still points at it
    store.release.set()
    with pytest.raises(kvdump.WriteError) as failure:
        writer.wait_all_done(timeout=LIMIT)
    assert failure.value.layer == 1
    assert failure.value.code == kvdump.StatusCode.INVALID_ARGUMENT
    assert "resized or replaced" in str(failure.value)


def test_a_load_destination_resized_before_its_scatter_fails_and_is_never_written(make_writer, make_loader) -> None:
    inner = kvdump.MemoryStore(capacity_bytes=16 << 20)
    writer = make_writer(inner, num_threads=1)
    with writer.cycle():
        kvdump.write_cache_store(writer, 0, torch.randn(SHAPE), [0, 1], [10, 11])
    store = StallingStore(inner)
    loader = make_loader(store, num_threads=1)
    make_writer.events.append(store.release)
    into = torch.zeros(SHAPE)
    loader.start()
    loader.load_async(0, into, [0, 1], [10, 11])
    assert store.entered.wait(LIMIT)  # the load waits in its get
    into.untyped_storage().resize_(0)
    store.release.set()
    with pytest.raises(kvdump.KvdumpError) as failure:
        loader.wait_layer(0, timeout=LIMIT)
    assert "resized or replaced" in str(failure.value)
    loader.abort()

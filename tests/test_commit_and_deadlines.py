"""Commit that never lies and deadlines that hold whatever the store does.

Commit: published blocks are exactly the longest fully stored prefix of each request that neither
failed nor was cancelled, decided in C++ from what stored. Deadlines: every waiting call returns by
its deadline while a store call is still stuck, and nothing an abandoned task finishes is published.

Stalls are made with events, never with sleeps: a call that returns "by its deadline" is checked by
observing that the store call it would otherwise have waited for is still inside the store."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable

import pytest
import torch

import kvdump
from kvdump.testing import FailingStore, ForwardingStore, StallingStore, every_key, no_key
from support import LIMIT, Gate, hold_a_worker, wait_until

SHAPE = (2, 8, 4, 2, 8)  # [K/V, blocks, block_size, heads, head_dim]
STALL = 30.0  # how long a stalled store call blocks unless released


@pytest.fixture
def stalling(make_writer):
    """Makes StallingStores that hold the puts (or reads) of matching keys for at most STALL seconds,
    then let them through; every one is released before the test's writers close."""

    def make(holds_put: Callable[[str], bool] = every_key, holds_get: Callable[[str], bool] = no_key) -> StallingStore:
        store = StallingStore(holds_put=holds_put, holds_get=holds_get, limit=STALL, fails_at_limit=False)
        make_writer.events.append(store.release)  # type: ignore[attr-defined]
        return store

    return make


def write_layers(
    writer: kvdump.AsyncWriter, kv: torch.Tensor, layers: range, ids: list[int], hashes: list[int], request: str
) -> None:
    for layer in layers:
        kvdump.write_cache_store(writer, layer, kv, ids, hashes, request=request)


def settle(writer: kvdump.AsyncWriter) -> None:
    """Waits until no thread of ``writer`` is still inside an abandoned store call."""
    assert wait_until(lambda: writer.stats()["threads_in_abandoned_calls"] == 0)


# --- commit ---------------------------------------------------------------------------------------


def test_a_cancelled_request_is_never_published(make_writer) -> None:
    store = kvdump.MemoryStore(capacity_bytes=16 << 20)
    writer = make_writer(store, num_threads=1)
    kv = torch.randn(SHAPE)
    gate = hold_a_worker(writer, label="hold the worker")
    write_layers(writer, kv, range(2), [0, 1], [101, 102], "A")
    write_layers(writer, kv, range(2), [2, 3], [201, 202], "B")
    assert writer.cancel_request("B") == 2
    gate.release.set()
    writer.wait_all_done(timeout=LIMIT)
    assert kvdump.lookup(store, [101, 102], num_layers=2) == 2
    assert kvdump.lookup(store, [201, 202], num_layers=2) == 0


def test_cancelling_a_request_whose_tasks_already_ran_still_withholds_it(make_writer) -> None:
    store = kvdump.MemoryStore(capacity_bytes=16 << 20)
    writer = make_writer(store, num_threads=1)
    kv = torch.randn(SHAPE)
    writer.init()
    write_layers(writer, kv, range(2), [2, 3], [201, 202], "B")
    assert wait_until(lambda: writer.stats()["completed"] >= 2)
    writer.cancel_request("B")
    writer.wait_all_done(timeout=LIMIT)
    assert kvdump.lookup(store, [201, 202]) == 0


def test_a_request_missing_layers_is_not_published_beside_a_complete_one(make_writer) -> None:
    store = kvdump.MemoryStore(capacity_bytes=16 << 20)
    writer = make_writer(store)
    kv = torch.randn(SHAPE)
    writer.init()
    write_layers(writer, kv, range(4), [0], [400], "D")
    write_layers(writer, kv, range(2), [1], [300], "C")
    writer.wait_all_done(timeout=LIMIT)
    assert kvdump.lookup(store, [400], num_layers=4) == 1
    assert kvdump.lookup(store, [300], num_layers=2) == 0
    assert kvdump.lookup(store, [300]) == 0


def test_a_declared_stage_publishes_its_range_and_lookup_asks_for_it(make_writer) -> None:
    store = kvdump.MemoryStore(capacity_bytes=16 << 20)
    writer = make_writer(store, layers=(2, 4))
    kv = torch.randn(SHAPE)
    writer.init()
    write_layers(writer, kv, range(2, 4), [0, 1], [7, 8], "r")
    writer.wait_all_done(timeout=LIMIT)
    assert kvdump.lookup(store, [7, 8], layers=(2, 4)) == 2
    assert kvdump.lookup(store, [7, 8], num_layers=4) == 0  # layers 0-1 were never written
    writer.init()
    with pytest.raises(kvdump.KvdumpValueError, match="layer"):
        kvdump.write_cache_store(writer, 5, kv, [0], [9])
    writer.abort()


def test_a_failed_request_is_withheld_and_named_while_others_are_published(make_writer) -> None:
    store = FailingStore(kvdump.MemoryStore(capacity_bytes=64 << 20), lambda key: f"{0x5EED:016x}" in key)
    writer = make_writer(store)
    kv = torch.randn(SHAPE)
    writer.init()
    write_layers(writer, kv, range(2), [0, 1], [0x5EED, 0x5EEE], "X")
    write_layers(writer, kv, range(2), [2], [0x600D], "Y")
    with pytest.raises(kvdump.WriteError) as err:
        writer.wait_all_done(timeout=LIMIT)
    assert err.value.failed_requests == ("X",)
    assert "X" in str(err.value)
    assert kvdump.lookup(store, [0x600D], num_layers=2) == 1
    assert kvdump.lookup(store, [0x5EED, 0x5EEE], num_layers=2) == 0


@pytest.mark.parametrize("cycles", [20])
def test_commit_records_a_batch_store_fails_per_item_fail_the_barrier(make_writer, cycles: int) -> None:
    class CommitRefusingStore(ForwardingStore):
        def batch_put(self, keys: list[str], values: list[memoryview]) -> list[object]:
            results: list[object] = []
            for key, value in zip(keys, values):
                if key.endswith("/commit"):
                    results.append(kvdump.StoreError("commit refused", key=key))
                else:
                    self.put(key, value)
                    results.append(None)
            return results

    store = CommitRefusingStore("commit-refusing", kvdump.MemoryStore(capacity_bytes=64 << 20))
    writer = make_writer(store)
    kv = torch.randn(SHAPE)
    for cycle in range(cycles):
        writer.init()
        write_layers(writer, kv, range(2), [0], [1000 + cycle], f"r{cycle}")
        with pytest.raises(kvdump.WriteError) as err:
            writer.wait_all_done(timeout=LIMIT)
        assert err.value.key.endswith("/commit")
        assert writer.state == "idle"
        assert kvdump.lookup(store, [1000 + cycle]) == 0


def test_two_waiters_lose_no_commit(make_writer) -> None:
    store = kvdump.MemoryStore(capacity_bytes=16 << 20)
    writer = make_writer(store, num_threads=1)
    kv = torch.randn(SHAPE)
    for cycle in range(30):
        gate = Gate()
        writer.init()
        writer.submit(gate, label="hold")
        write_layers(writer, kv, range(2), [0], [5000 + cycle], "r")
        outcomes: list[object] = []

        def wait(outcomes: list[object] = outcomes) -> None:
            try:
                outcomes.append(writer.wait_all_done(timeout=LIMIT))
            except kvdump.LifecycleError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=wait) for _ in range(2)]
        for t in threads:
            t.start()
        assert wait_until(lambda outcomes=outcomes: len(outcomes) >= 1 or writer.state == "draining")
        gate.release.set()
        for t in threads:
            t.join(LIMIT)
        assert sorted(type(o).__name__ for o in outcomes) == ["CycleReport", "LifecycleError"]
        assert kvdump.lookup(store, [5000 + cycle], num_layers=2) == 1


def test_an_invalid_timeout_loses_nothing(make_writer) -> None:
    store = kvdump.MemoryStore(capacity_bytes=16 << 20)
    writer = make_writer(store)
    writer.init()
    write_layers(writer, torch.randn(SHAPE), range(2), [0], [77], "r")
    with pytest.raises(kvdump.KvdumpValueError, match="timeout"):
        writer.wait_all_done(float("nan"))
    assert writer.state == "accepting"
    writer.wait_all_done(timeout=LIMIT)
    assert kvdump.lookup(store, [77], num_layers=2) == 1


def test_a_write_timeout_followed_by_a_good_wait_publishes(make_writer, stalling) -> None:
    store = stalling()
    writer = make_writer(store, num_threads=1)
    writer.init()
    write_layers(writer, torch.randn(SHAPE), range(1), [0], [88], "r")
    assert store.entered.wait(LIMIT)
    with pytest.raises(kvdump.WriteTimeout) as err:
        writer.wait_all_done(timeout=0)
    assert "write layer 0 of request r" in str(err.value)
    assert err.value.key.endswith("/L0")
    store.release.set()
    writer.wait_all_done(timeout=LIMIT)
    assert kvdump.lookup(store, [88], num_layers=1) == 1


def test_a_stalled_commit_is_named_by_the_record_the_store_waits_on(make_writer, stalling) -> None:
    store = stalling(holds_put=lambda key: key.endswith("/commit"))
    seen: list[str] = []
    holds = store.holds_put
    store.holds_put = lambda key: seen.append(key) is None and holds(key)
    writer = make_writer(store, num_threads=2)
    writer.init()
    write_layers(writer, torch.randn(SHAPE), range(1), [0, 1, 2], [11, 12, 13], "r")

    def barrier_reached_the_commit() -> bool:
        # The records are put once every layer stored, by the barrier; each short wait leaves the
        # cycle open, to be waited on again.
        with pytest.raises(kvdump.WriteTimeout):
            writer.wait_all_done(timeout=0.01)
        return store.entered.is_set()

    assert wait_until(barrier_reached_the_commit)
    with pytest.raises(kvdump.WriteTimeout) as err:
        writer.wait_all_done(timeout=0)
    commits = [key for key in seen if key.endswith("/commit")]
    assert len(commits) == 1  # the one put the store holds: records go last block first
    assert err.value.key == commits[0]
    assert f"[key={commits[0]}]" in writer.abort(timeout=0)["first_abandoned"]


def test_an_abandoned_commit_never_retracts_a_retrys_records(make_writer) -> None:
    # The first commit put is held until released: the cycle is aborted while it is in flight.
    store = StallingStore(holds_put=lambda key: key.endswith("/commit"), limit=STALL, fails_at_limit=False)
    make_writer.events.append(store.release)  # type: ignore[attr-defined]
    writer = make_writer(store, num_threads=2)
    kv = torch.randn(SHAPE)
    writer.init()
    write_layers(writer, kv, range(2), [0, 1], [11, 12], "r")

    def barrier_reached_the_commit() -> bool:
        with pytest.raises(kvdump.WriteTimeout):
            writer.wait_all_done(timeout=0.01)
        return store.entered.is_set()

    assert wait_until(barrier_reached_the_commit)
    writer.abort(timeout=0)
    # The retry writes the same blocks, so the same record keys, and publishes them.
    store.stalling = False
    with writer.cycle(timeout=LIMIT):
        write_layers(writer, kv, range(2), [0, 1], [11, 12], "r")
    assert kvdump.lookup(store, [11, 12], num_layers=2) == 2
    # The abandoned put lands now; its cycle takes back only what the retry has not published.
    store.release.set()
    settle(writer)
    assert kvdump.lookup(store, [11, 12], num_layers=2) == 2


def test_a_forged_commit_record_is_refused(make_writer) -> None:
    store = kvdump.MemoryStore(capacity_bytes=16 << 20)
    writer = make_writer(store)
    writer.init()
    write_layers(writer, torch.randn(SHAPE), range(2), [0], [99], "r")
    writer.wait_all_done(timeout=LIMIT)
    key = kvdump.KeySpace().commit_key(99)
    forged = bytearray(store.get(key))
    forged[12] = 5  # claims five layers
    store.put(key, bytes(forged))
    with pytest.raises(kvdump.ChecksumError) as err:
        kvdump.lookup(store, [99], num_layers=5)
    assert err.value.key == key


def test_a_block_copied_from_another_namespace_is_refused_naming_its_key(make_writer) -> None:
    store = kvdump.MemoryStore(capacity_bytes=16 << 20)
    writer = make_writer(store, key_space=kvdump.KeySpace("model-b"))
    kv = torch.randn(SHAPE)
    writer.init()
    kvdump.write_cache_store(writer, 0, kv, [0], [123])
    writer.wait_all_done(timeout=LIMIT)
    theirs = kvdump.KeySpace("model-b").block_key(123, 0)
    ours = kvdump.KeySpace("model-a").block_key(123, 0)
    store.put(ours, store.get(theirs))
    with kvdump.KVLoader(store, key_space=kvdump.KeySpace("model-a"), num_threads=1) as loader:
        with pytest.raises(kvdump.KeySpaceMismatchError) as err:
            loader.load(0, torch.zeros(SHAPE), [0], [123])
    assert err.value.key == ours


# --- deadlines --------------------------------------------------------------------------------------


def test_cycle_returns_by_its_deadline_while_the_store_is_stuck(make_writer, stalling) -> None:
    store = stalling()
    writer = make_writer(store, num_threads=1)
    kv = torch.randn(SHAPE)
    with pytest.raises(kvdump.WriteTimeout):
        with writer.cycle(timeout=0.05):
            kvdump.write_cache_store(writer, 0, kv, [0, 1], [1, 2], request="r")
            assert store.entered.wait(LIMIT)
    assert store.held == 1  # returned without waiting for the stuck put
    assert writer.state == "idle"
    store.release.set()
    settle(writer)
    assert kvdump.lookup(store, [1, 2]) == 0  # what the abandoned put finished is never published


def test_abort_and_close_return_by_their_deadline_while_the_store_is_stuck(make_writer, stalling) -> None:
    store = stalling()
    writer = make_writer(store, num_threads=1)
    writer.init()
    kvdump.write_cache_store(writer, 0, torch.randn(SHAPE), [0], [1])
    assert store.entered.wait(LIMIT)
    with pytest.raises(kvdump.WriteTimeout):
        writer.wait_all_done(timeout=0.01)
    report = writer.abort(timeout=0.01)
    assert report["abandoned"] == 1 and store.held == 1
    assert "write layer 0" in report["first_abandoned"]

    # The pool serves on a replacement thread while the stuck one waits.
    store.stalling = False
    writer.init()
    kvdump.write_cache_store(writer, 0, torch.randn(SHAPE), [0], [2])
    writer.wait_all_done(timeout=LIMIT)
    assert kvdump.lookup(store, [2], num_layers=1) == 1

    store.stalling = True
    store.entered.clear()
    writer.init()
    kvdump.write_cache_store(writer, 0, torch.randn(SHAPE), [0], [3])
    assert store.entered.wait(LIMIT)
    writer.close(timeout=0.01)
    assert store.held == 2 and writer.closed
    store.release.set()


def test_wrap_model_returns_by_its_deadline_while_the_store_is_stuck(make_writer, stalling) -> None:
    store = stalling()
    writer = make_writer(store, num_threads=1)
    kv = torch.randn(SHAPE)

    class Model:
        def forward(self) -> str:
            kvdump.write_cache_store(writer, 0, kv, [0], [5])
            assert store.entered.wait(LIMIT)
            return "output"

    model = kvdump.wrap_model(Model(), writer, timeout=0.05)
    with pytest.raises(kvdump.WriteTimeout):
        model.forward()
    assert store.held == 1 and writer.state == "idle"


def test_the_loader_returns_by_its_deadlines_while_a_read_is_stuck(make_writer, stalling) -> None:
    store = stalling(holds_put=no_key, holds_get=every_key)
    writer = make_writer(store)
    writer.init()
    kvdump.write_cache_store(writer, 0, torch.randn(SHAPE), [0], [1])
    kvdump.write_cache_store(writer, 1, torch.randn(SHAPE), [0], [1])
    writer.wait_all_done(timeout=LIMIT)

    loader = kvdump.KVLoader(store, num_threads=1, abort_timeout=0.01)
    dest = torch.zeros(SHAPE)
    loader.start()
    loader.load_async(0, dest, [3], [1])
    assert store.entered.wait(LIMIT)
    with pytest.raises(kvdump.WriteTimeout):
        loader.wait_layer(0, timeout=0.01)
    with pytest.raises(kvdump.WriteTimeout):
        loader.finish(timeout=0.01)
    loader.abort(timeout=0.01)
    assert store.held == 1
    with pytest.raises(kvdump.AbortedError):
        loader.wait_layer(0, timeout=LIMIT)
    loader.close(timeout=0.01)
    store.release.set()
    # The abandoned load never scatters into the destination, even once its read returns.
    assert wait_until(lambda: store.held == 0)
    gc.collect()
    assert torch.count_nonzero(dest) == 0


def test_a_native_delayed_store_cannot_hold_abort_past_its_deadline(make_writer) -> None:
    store = kvdump.DelayedStore(kvdump.MemoryStore(capacity_bytes=1 << 20), put_delay=STALL)
    writer = make_writer(store, num_threads=1, max_abandoned_threads=1)
    writer.init()
    kvdump.write_cache_store(writer, 0, torch.randn(SHAPE), [0], [1])
    assert wait_until(lambda: writer.stats()["running"] == 1)
    with pytest.raises(kvdump.WriteTimeout):
        writer.wait_all_done(timeout=0.01)
    report = writer.abort(timeout=0)
    assert report["abandoned"] == 1
    assert writer.state == "idle"


def test_closing_a_loader_wakes_a_waiter_without_a_deadline(make_writer, stalling) -> None:
    store = stalling(holds_put=no_key, holds_get=every_key)
    loader = kvdump.KVLoader(store, num_threads=1, abort_timeout=0)
    loader.start()
    loader.load_async(0, torch.zeros(SHAPE), [0], [1])
    assert store.entered.wait(LIMIT)
    caught: list[BaseException] = []

    def waiter() -> None:
        try:
            loader.wait_layer(0)
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever was raised
            caught.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    loader.close(timeout=0)
    thread.join(LIMIT)
    assert not thread.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], (kvdump.LifecycleError, kvdump.AbortedError))
    store.release.set()


def test_an_abandoned_task_never_gathers_blocks_the_caller_reuses(make_writer, stalling) -> None:
    """The second task waits for staging memory the stuck first task holds. Once abort() returns, the
    caller overwrites the second task's blocks: the second task must never gather or put them."""
    store = stalling(holds_put=lambda key: "/L0" in key)
    kv = torch.randn(SHAPE)
    record_bytes = 64 + 2 * kv[0, 0].numel() * kv.element_size()
    writer = make_writer(store, num_threads=2, staging_bytes=record_bytes, staging_timeout=LIMIT)
    writer.init()
    kvdump.write_cache_store(writer, 0, kv, [0], [1], request="first")
    assert store.entered.wait(LIMIT)
    kvdump.write_cache_store(writer, 1, kv, [1], [2], request="second")
    # With a worker running, the forward's thread wakes an idle peer only once a second task waits.
    kvdump.write_cache_store(writer, 2, kv, [2], [3], request="third")
    assert wait_until(lambda: writer.stats()["staging"]["waits"] >= 1)
    report = writer.abort(timeout=0)
    assert report["abandoned"] == 2
    assert report["cancelled"] == 1
    kv[:, 1].fill_(float("nan"))  # the caller reuses the blocks
    kv[:, 2].fill_(float("nan"))
    store.release.set()
    settle(writer)
    assert not store.exists(kvdump.KeySpace().block_key(2, 1))
    assert not store.exists(kvdump.KeySpace().block_key(3, 2))
    assert kvdump.lookup(store, [1]) == 0


def test_tensors_are_released_once_gathered_even_while_the_put_is_stuck(make_writer, stalling) -> None:
    store = stalling()
    writer = make_writer(store, num_threads=1)
    kv = torch.randn(SHAPE)
    baseline = torch._C._storage_Use_Count(kv.untyped_storage()._cdata)
    writer.init()
    # A fresh view: the storage's use count then counts the op's reference to the tensor it holds.
    kvdump.write_cache_store(writer, 0, kv.view(kv.shape), [0, 1], [1, 2])
    assert store.entered.wait(LIMIT)
    assert torch._C._storage_Use_Count(kv.untyped_storage()._cdata) == baseline
    store.release.set()
    writer.wait_all_done(timeout=LIMIT)


# --- crashes and leaks --------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "meta", "xpu", "nonsense"])
def test_a_staging_device_this_process_lacks_is_refused_at_construction(device: str) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this process has CUDA")
    with pytest.raises(kvdump.KvdumpValueError, match="staging_device"):
        kvdump.AsyncWriter(kvdump.MemoryStore(capacity_bytes=1 << 20), staging_device=device)


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_synchronous_loads_from_many_short_lived_stores_leave_no_threads() -> None:
    kv = torch.randn(SHAPE)
    dest = torch.zeros(SHAPE)
    before = _threads()
    for i in range(100):
        store = kvdump.MemoryStore(capacity_bytes=1 << 20)
        with kvdump.AsyncWriter(store, num_threads=1) as writer:
            writer.init()
            kvdump.write_cache_store(writer, 0, kv, [i % 8], [i])
            writer.wait_all_done(timeout=LIMIT)
        kvdump.load_cache_store(store, 0, dest, [i % 8], [i])
        assert torch.equal(dest[:, i % 8], kv[:, i % 8])
    gc.collect()
    assert _threads() <= before

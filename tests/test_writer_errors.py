"""How the writer reports failures: WriteError's fields and cause, store errors, deadlines."""

from __future__ import annotations

import threading

import pytest

import kvdump
from kvdump import StatusCode
from support import LIMIT, Gate, assert_usable, hold_a_worker, raiser  # noqa: E402

# --- WriteError -------------------------------------------------------------------------------------


def test_write_error_describes_the_failure_and_chains_the_cause(make_writer) -> None:
    w = make_writer()
    original = ValueError("block 7 is corrupt")
    w.init()
    w.submit(lambda: None, label="ok-1")
    w.submit(raiser(original), label="layer-3 of req-9", layer=3, request="req-9")
    w.submit(lambda: None, label="ok-2")
    with pytest.raises(kvdump.WriteError) as info:
        w.wait_all_done(timeout=LIMIT)
    e = info.value
    assert isinstance(e, kvdump.KvdumpError)
    assert e.label == "layer-3 of req-9"
    assert e.layer == 3
    assert e.request == "req-9"
    assert e.key == ""
    assert e.code is StatusCode.TASK_FAILED
    assert isinstance(e.code, StatusCode)
    assert (e.failed, e.submitted) == (1, 3)
    assert e.__cause__ is original
    assert "block 7 is corrupt" in str(e)
    assert w.state == "idle"
    s = w.stats()
    assert (s["failed"], s["completed"], s["cycles"]) == (1, 2, 1)
    assert_usable(w)


def test_write_error_without_layer_or_request(make_writer) -> None:
    w = make_writer()
    w.init()
    w.submit(raiser(RuntimeError("x")), label="plain")
    with pytest.raises(kvdump.WriteError) as info:
        w.wait_all_done(timeout=LIMIT)
    assert info.value.layer is None
    assert info.value.request == ""
    assert info.value.label == "plain"
    assert isinstance(info.value.__cause__, RuntimeError)


def test_write_error_counts_every_failure(make_writer) -> None:
    w = make_writer(num_threads=3)
    failing = {f"bad-{i}" for i in range(5)}
    w.init()
    for i in range(10):
        w.submit(lambda: None, label=f"good-{i}")
    for label in sorted(failing):
        w.submit(raiser(KeyError(label)), label=label)
    with pytest.raises(kvdump.WriteError) as info:
        w.wait_all_done(timeout=LIMIT)
    e = info.value
    assert (e.failed, e.submitted) == (5, 15)
    assert e.label in failing  # the first to fail, whichever thread ran it
    assert isinstance(e.__cause__, KeyError)
    assert e.__cause__.args == (e.label,)  # the cause belongs to the task the error names
    assert w.stats()["failed"] == 5
    assert_usable(w)


def test_store_full_raised_by_a_task_keeps_code_and_key(make_writer) -> None:
    w = make_writer()
    original = kvdump.StoreFullError("no room for block", code=StatusCode.STORE_FULL, key="k")
    w.init()
    w.submit(raiser(original), label="put-k", layer=0, request="r")
    with pytest.raises(kvdump.WriteError) as info:
        w.wait_all_done(timeout=LIMIT)
    e = info.value
    assert e.code is StatusCode.STORE_FULL
    assert e.key == "k"
    assert e.__cause__ is original
    assert "key='k'" in str(e)
    assert_usable(w)


@pytest.mark.parametrize(
    "exc_type, code",
    [
        (kvdump.KeyNotFoundError, StatusCode.NOT_FOUND),
        (kvdump.ChecksumError, StatusCode.CHECKSUM_MISMATCH),
        (kvdump.StoreError, StatusCode.IO_ERROR),
        (kvdump.LeaseHeldError, StatusCode.LEASE_HELD),
    ],
)
def test_kvdump_error_raised_by_a_task_keeps_its_code(make_writer, exc_type, code) -> None:
    w = make_writer()
    original = exc_type("store said no", code=code, key="ns/blk/1")
    w.init()
    w.submit(raiser(original), label="t")
    with pytest.raises(kvdump.WriteError) as info:
        w.wait_all_done(timeout=LIMIT)
    assert info.value.code is code
    assert info.value.key == "ns/blk/1"
    assert info.value.__cause__ is original


def test_real_store_full_inside_a_task(make_writer) -> None:
    store = kvdump.MemoryStore(capacity_bytes=100, eviction="refuse")
    w = make_writer(store=store)
    w.init()
    w.submit(lambda: store.put("fits", b"a" * 80), label="fits")
    assert w.wait_all_done(timeout=LIMIT).completed == 1
    w.init()
    w.submit(lambda: store.put("too-big", b"b" * 50), label="too-big", layer=1, request="req")
    with pytest.raises(kvdump.WriteError) as info:
        w.wait_all_done(timeout=LIMIT)
    e = info.value
    assert e.code is StatusCode.STORE_FULL
    assert e.key == "too-big"
    assert (e.label, e.layer, e.request) == ("too-big", 1, "req")
    assert isinstance(e.__cause__, kvdump.StoreFullError)
    assert store.get("fits") == b"a" * 80  # nothing was evicted
    assert store.get("too-big") is None


def test_a_raising_task_is_never_counted_as_completed(make_writer) -> None:
    w = make_writer()
    w.init()
    w.submit(raiser(kvdump.KvdumpError("odd", code=StatusCode.OK)), label="ok-coded")
    with pytest.raises(kvdump.WriteError) as info:
        w.wait_all_done(timeout=LIMIT)
    assert info.value.failed == 1


class ForeignError(Exception):
    """An exception of some other library that happens to carry `code` and `key` attributes."""

    def __init__(self) -> None:
        super().__init__("HTTP 404")
        self.code = 404
        self.key = "remote/object"


def test_foreign_exception_with_code_attribute_is_a_task_failure(make_writer) -> None:
    w = make_writer()
    w.init()
    w.submit(raiser(ForeignError()), label="foreign")
    with pytest.raises(kvdump.WriteError) as info:
        w.wait_all_done(timeout=LIMIT)
    assert info.value.code is StatusCode.TASK_FAILED
    assert isinstance(info.value.__cause__, ForeignError)


def test_failure_does_not_leak_into_the_next_cycle(make_writer) -> None:
    w = make_writer()
    w.init()
    w.submit(raiser(RuntimeError("first cycle")), label="bad")
    with pytest.raises(kvdump.WriteError):
        w.wait_all_done(timeout=LIMIT)
    w.init()
    w.submit(lambda: None, label="good")
    assert w.wait_all_done(timeout=LIMIT) == kvdump.CycleReport(1, 1, 0, 0)


# --- deadlines --------------------------------------------------------------------------------------


def test_wait_timeout_leaves_the_cycle_open(make_writer) -> None:
    w = make_writer(num_threads=1)
    gate = hold_a_worker(w)
    with pytest.raises(kvdump.WriteTimeout) as info:
        w.wait_all_done(timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    assert info.value.code is StatusCode.TIMEOUT
    assert w.state == "accepting"
    # The cycle is still open: more work may join it.
    late = threading.Event()
    w.submit(late.set, label="late")
    with pytest.raises(kvdump.WriteTimeout):
        w.wait_all_done(timeout=0)
    gate.release.set()
    report = w.wait_all_done(timeout=LIMIT)
    assert report == kvdump.CycleReport(submitted=2, completed=2, failed=0, cancelled=0)
    assert late.is_set()
    assert w.state == "idle"
    assert w.stats()["cycles"] == 1
    assert_usable(w)


def test_wait_timeout_then_abort(make_writer) -> None:
    w = make_writer(num_threads=1)
    gate = hold_a_worker(w)
    with pytest.raises(kvdump.WriteTimeout):
        w.wait_all_done(timeout=0.01)
    gate.release.set()
    report = w.abort()
    assert report["cancelled"] == 0
    assert w.state == "idle"
    assert_usable(w)


def test_submit_on_a_full_queue_times_out(make_writer) -> None:
    w = make_writer(num_threads=1, queue_capacity=1)
    gate = Gate()
    queued = threading.Event()
    refused = threading.Event()
    w.init()
    w.submit(gate, label="running")
    assert gate.started.wait(LIMIT)
    w.submit(queued.set, label="queued")
    with pytest.raises(kvdump.WriteTimeout) as info:
        w.submit(refused.set, label="refused", timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    assert info.value.code is StatusCode.TIMEOUT
    assert w.state == "accepting"
    s = w.stats()
    assert (s["rejected"], s["submitted"], s["queue_depth"]) == (1, 2, 1)
    gate.release.set()
    report = w.wait_all_done(timeout=LIMIT)
    # The refused task is not part of the cycle and never runs.
    assert report == kvdump.CycleReport(submitted=2, completed=2, failed=0, cancelled=0)
    assert queued.is_set()
    assert not refused.is_set()
    assert_usable(w)


def test_submit_timeout_default_comes_from_the_constructor(make_writer) -> None:
    w = make_writer(num_threads=1, queue_capacity=1, submit_timeout=0.05)
    gate = hold_a_worker(w, label="running")
    w.submit(lambda: None, label="queued")
    with pytest.raises(kvdump.WriteTimeout):
        w.submit(lambda: None, label="refused")
    gate.release.set()
    assert w.wait_all_done(timeout=LIMIT).submitted == 2


def test_submit_waits_for_space_when_the_queue_drains(make_writer) -> None:
    w = make_writer(num_threads=1, queue_capacity=1)
    gate = hold_a_worker(w, label="running")
    w.submit(lambda: None, label="queued")
    threading.Timer(0.05, gate.release.set).start()
    w.submit(lambda: None, label="third", timeout=LIMIT)  # blocks until the gate opens, then fits
    assert w.wait_all_done(timeout=LIMIT) == kvdump.CycleReport(3, 3, 0, 0)
    assert w.stats()["queue_high_water"] == 1


@pytest.mark.parametrize("bad", [-1.0, -1e-9, float("nan"), float("-inf")])
def test_bad_timeouts_are_value_errors(make_writer, bad) -> None:
    w = make_writer()
    with pytest.raises(ValueError) as info:
        w.wait_all_done(timeout=bad)  # checked before the lifecycle: no init needed
    assert isinstance(info.value, kvdump.KvdumpValueError)
    w.init()
    with pytest.raises(kvdump.KvdumpValueError):
        w.submit(lambda: None, label="t", timeout=bad)
    with pytest.raises(kvdump.KvdumpValueError):
        w.wait_all_done(timeout=bad)
    assert w.state == "accepting"
    assert w.wait_all_done(timeout=LIMIT).submitted == 0
    assert w.stats()["rejected"] == 0


def test_zero_timeout_on_an_idle_cycle_succeeds(make_writer) -> None:
    w = make_writer()
    w.init()
    assert w.wait_all_done(timeout=0) == kvdump.CycleReport(0, 0, 0, 0)

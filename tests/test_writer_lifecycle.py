"""The writer's lifecycle from Python: idle -> accepting -> idle, misuse, cycle(), abort, cancel, close."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import pytest

import kvdump
from support import LIMIT, Gate, hold_a_worker, wait_until  # noqa: E402


class Recorder:
    """Tasks that append their name to a shared list when they run."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self._lock = threading.Lock()

    def task(self, name: str) -> Callable[[], None]:
        def run() -> None:
            with self._lock:
                self.ran.append(name)

        return run


def run_one_cycle(writer: kvdump.AsyncWriter, n: int = 3) -> kvdump.CycleReport:
    """Proves the writer is usable: a full cycle with `n` tasks that must all run."""
    rec = Recorder()
    writer.init()
    for i in range(n):
        writer.submit(rec.task(f"t{i}"), label=f"t{i}")
    report = writer.wait_all_done(timeout=LIMIT)
    assert sorted(rec.ran) == sorted(f"t{i}" for i in range(n))
    assert report == kvdump.CycleReport(submitted=n, completed=n, failed=0, cancelled=0)
    assert writer.state == "idle"
    return report


# --- states ---------------------------------------------------------------------------------------


def test_states_idle_accepting_idle(make_writer) -> None:
    w = make_writer()
    assert w.state == "idle"
    w.init()
    assert w.state == "accepting"
    rec = Recorder()
    w.submit(rec.task("a"), label="a")
    assert w.state == "accepting"
    report = w.wait_all_done(timeout=LIMIT)
    assert w.state == "idle"
    assert rec.ran == ["a"]
    assert report == kvdump.CycleReport(submitted=1, completed=1, failed=0, cancelled=0)
    assert isinstance(report, kvdump.CycleReport)


def test_empty_cycle(make_writer) -> None:
    w = make_writer()
    w.init()
    assert w.wait_all_done(timeout=LIMIT) == kvdump.CycleReport(0, 0, 0, 0)
    assert w.state == "idle"
    assert w.stats()["cycles"] == 1


def test_state_is_draining_while_barrier_waits_and_submit_is_refused(make_writer) -> None:
    w = make_writer(num_threads=1)
    gate = hold_a_worker(w)
    seen: dict[str, object] = {}

    def observer() -> None:
        seen["draining"] = wait_until(lambda: w.state == "draining")
        try:
            w.submit(lambda: None, label="late")
        except kvdump.LifecycleError as e:
            seen["submit_error"] = e
        try:
            w.init()
        except kvdump.LifecycleError as e:
            seen["init_error"] = e
        gate.release.set()

    t = threading.Thread(target=observer)
    t.start()
    report = w.wait_all_done(timeout=LIMIT)
    t.join(LIMIT)
    assert seen["draining"] is True
    assert isinstance(seen.get("submit_error"), kvdump.LifecycleError)
    assert isinstance(seen.get("init_error"), kvdump.LifecycleError)
    assert report == kvdump.CycleReport(submitted=1, completed=1, failed=0, cancelled=0)
    assert w.state == "idle"
    run_one_cycle(w)


# --- misuse -----------------------------------------------------------------------------------------


def test_submit_before_init(make_writer) -> None:
    w = make_writer()
    rec = Recorder()
    with pytest.raises(kvdump.LifecycleError) as info:
        w.submit(rec.task("x"), label="x")
    assert info.value.code == kvdump.StatusCode.LIFECYCLE
    assert isinstance(info.value, RuntimeError)
    assert w.state == "idle"
    assert w.stats()["rejected"] == 1
    assert w.stats()["submitted"] == 0
    run_one_cycle(w)
    assert rec.ran == []  # the refused task never ran


def test_double_init_keeps_the_open_cycle(make_writer) -> None:
    w = make_writer()
    rec = Recorder()
    w.init()
    w.submit(rec.task("before"), label="before")
    with pytest.raises(kvdump.LifecycleError):
        w.init()
    assert w.state == "accepting"
    w.submit(rec.task("after"), label="after")
    report = w.wait_all_done(timeout=LIMIT)
    # The second init neither reset nor closed the cycle: both tasks belong to it.
    assert report == kvdump.CycleReport(submitted=2, completed=2, failed=0, cancelled=0)
    assert sorted(rec.ran) == ["after", "before"]
    run_one_cycle(w)


def test_wait_all_done_without_init(make_writer) -> None:
    w = make_writer()
    with pytest.raises(kvdump.LifecycleError):
        w.wait_all_done()
    with pytest.raises(kvdump.LifecycleError):
        w.wait_all_done(timeout=0.01)
    assert w.state == "idle"
    run_one_cycle(w)


def test_wait_all_done_twice(make_writer) -> None:
    w = make_writer()
    w.init()
    w.wait_all_done(timeout=LIMIT)
    with pytest.raises(kvdump.LifecycleError):
        w.wait_all_done(timeout=LIMIT)
    run_one_cycle(w)


def test_submit_after_abort(make_writer) -> None:
    w = make_writer()
    rec = Recorder()
    w.init()
    w.abort()
    assert w.state == "idle"
    with pytest.raises(kvdump.LifecycleError):
        w.submit(rec.task("x"), label="x")
    run_one_cycle(w)
    assert rec.ran == []


def test_submit_after_wait(make_writer) -> None:
    w = make_writer()
    rec = Recorder()
    w.init()
    w.wait_all_done(timeout=LIMIT)
    with pytest.raises(kvdump.LifecycleError):
        w.submit(rec.task("x"), label="x")
    assert w.state == "idle"
    run_one_cycle(w)
    assert rec.ran == []


def test_wait_and_abort_from_inside_a_task_are_refused(make_writer) -> None:
    w = make_writer()
    caught: list[BaseException] = []

    def calls_wait() -> None:
        try:
            w.wait_all_done(timeout=LIMIT)
        except kvdump.LifecycleError as e:
            caught.append(e)

    def calls_abort() -> None:
        try:
            w.abort()
        except kvdump.LifecycleError as e:
            caught.append(e)

    def calls_close() -> None:
        try:
            w.close()
        except kvdump.LifecycleError as e:
            caught.append(e)

    w.init()
    w.submit(calls_wait, label="wait-inside")
    w.submit(calls_abort, label="abort-inside")
    w.submit(calls_close, label="close-inside")
    report = w.wait_all_done(timeout=LIMIT)
    assert report.completed == 3
    assert len(caught) == 3 and all(isinstance(e, kvdump.LifecycleError) for e in caught)
    assert "own tasks" in str(caught[2])
    assert not w.closed
    run_one_cycle(w)


def test_abort_when_idle_is_a_noop(make_writer) -> None:
    w = make_writer()
    report = w.abort()
    assert report == {
        "cancelled": 0,
        "finished_running": 0,
        "abandoned": 0,
        "failed": 0,
        "first_failure": None,
        "first_abandoned": None,
    }
    assert w.state == "idle"
    assert w.stats()["aborts"] == 0
    run_one_cycle(w)


# --- cycle() ----------------------------------------------------------------------------------------


def test_cycle_success_returns_to_idle(make_writer) -> None:
    w = make_writer()
    rec = Recorder()
    with w.cycle(timeout=LIMIT) as cw:
        assert cw is w
        assert w.state == "accepting"
        for i in range(5):
            w.submit(rec.task(f"t{i}"), label=f"t{i}")
    assert w.state == "idle"
    assert sorted(rec.ran) == [f"t{i}" for i in range(5)]
    s = w.stats()
    assert (s["cycles"], s["aborts"], s["completed"]) == (1, 0, 5)


def test_cycle_exception_aborts_reraises_and_writer_is_reusable(make_writer) -> None:
    w = make_writer(num_threads=1)
    gate = Gate()
    rec = Recorder()

    class Boom(Exception):
        pass

    releaser = threading.Thread(target=lambda: wait_until(lambda: w.state == "aborting") and gate.release.set())
    with pytest.raises(Boom):
        with w.cycle(timeout=LIMIT):
            w.submit(gate, label="gate")
            assert gate.started.wait(LIMIT)
            for i in range(4):
                w.submit(rec.task(f"q{i}"), label=f"q{i}")
            releaser.start()
            raise Boom("forward failed")
    releaser.join(LIMIT)
    assert w.state == "idle"
    assert gate.finished.is_set()  # the running task was waited for
    assert rec.ran == []  # the queued ones were cancelled, never run
    s = w.stats()
    assert (s["aborts"], s["cancelled"], s["cycles"]) == (1, 4, 0)
    run_one_cycle(w)


def test_cycle_exception_before_any_submit(make_writer) -> None:
    w = make_writer()
    with pytest.raises(KeyError):
        with w.cycle():
            raise KeyError("x")
    assert w.state == "idle"
    run_one_cycle(w)


def test_cycle_task_failure_raises_write_error_and_leaves_idle(make_writer) -> None:
    w = make_writer()

    def fails() -> None:
        raise RuntimeError("task failed")

    with pytest.raises(kvdump.WriteError) as info:
        with w.cycle(timeout=LIMIT):
            w.submit(fails, label="bad")
            w.submit(lambda: None, label="good")
    assert info.value.label == "bad"
    assert (info.value.failed, info.value.submitted) == (1, 2)
    assert w.state == "idle"
    run_one_cycle(w)


def test_cycle_barrier_timeout_aborts_and_reraises(make_writer) -> None:
    w = make_writer(num_threads=1)
    gate = Gate()
    rec = Recorder()
    releaser = threading.Thread(target=lambda: wait_until(lambda: w.state == "aborting") and gate.release.set())
    releaser.start()
    with pytest.raises(kvdump.WriteTimeout):
        with w.cycle(timeout=0.05):
            w.submit(gate, label="gate")
            assert gate.started.wait(LIMIT)
            w.submit(rec.task("queued"), label="queued")
    releaser.join(LIMIT)
    assert w.state == "idle"
    assert rec.ran == []
    assert w.stats()["aborts"] == 1
    run_one_cycle(w)


# --- abort ------------------------------------------------------------------------------------------


def test_abort_cancels_queued_and_finishes_running(make_writer) -> None:
    w = make_writer(num_threads=1)
    rec = Recorder()
    gate = hold_a_worker(w, label="running")
    for i in range(5):
        w.submit(rec.task(f"q{i}"), label=f"q{i}")
    # Release the running task only once abort() is under way, which proves abort waited for it
    # (and that abort releases the GIL, since the task needs it to finish).
    releaser = threading.Thread(target=lambda: wait_until(lambda: w.state == "aborting") and gate.release.set())
    releaser.start()
    report = w.abort()
    releaser.join(LIMIT)
    assert report == {
        "cancelled": 5,
        "finished_running": 1,
        "abandoned": 0,
        "failed": 0,
        "first_failure": None,
        "first_abandoned": None,
    }
    assert gate.finished.is_set()
    assert rec.ran == []
    assert w.state == "idle"
    s = w.stats()
    assert (s["cancelled"], s["aborts"], s["completed"], s["cycles"]) == (5, 1, 1, 0)
    assert (s["queue_depth"], s["running"]) == (0, 0)
    run_one_cycle(w)


def test_abort_reports_failures_of_the_aborted_cycle(make_writer) -> None:
    w = make_writer(num_threads=1)

    def fails() -> None:
        raise ValueError("bad block")

    gate = Gate()
    w.init()
    w.submit(fails, label="failing-task")
    w.submit(gate, label="gate")
    assert gate.started.wait(LIMIT)  # single worker: the failing task has run by now
    w.submit(lambda: None, label="queued")
    gate.release.set()
    report = w.abort()
    assert report["failed"] == 1
    assert report["cancelled"] + w.stats()["completed"] == 2  # `queued` either ran or was cancelled
    assert "failing-task" in report["first_failure"]
    assert "bad block" in report["first_failure"]
    assert w.state == "idle"
    run_one_cycle(w)


def test_abort_while_another_thread_waits_raises_aborted_error(make_writer) -> None:
    w = make_writer(num_threads=1)
    rec = Recorder()
    gate = hold_a_worker(w)
    w.submit(rec.task("queued"), label="queued")
    abort_report: dict[str, object] = {}

    def aborter() -> None:
        assert wait_until(lambda: w.state == "draining")
        releaser = threading.Thread(target=lambda: wait_until(lambda: w.state == "aborting") and gate.release.set())
        releaser.start()
        abort_report.update(w.abort())
        releaser.join(LIMIT)

    t = threading.Thread(target=aborter)
    t.start()
    with pytest.raises(kvdump.AbortedError) as info:
        w.wait_all_done(timeout=LIMIT)
    t.join(LIMIT)
    assert info.value.code == kvdump.StatusCode.CANCELLED
    assert abort_report["cancelled"] == 1
    assert abort_report["finished_running"] == 1
    assert rec.ran == []
    assert w.state == "idle"
    run_one_cycle(w)


def test_close_while_another_thread_waits_raises_lifecycle_error(make_writer) -> None:
    w = make_writer(num_threads=1)
    gate = hold_a_worker(w)

    def closer() -> None:
        assert wait_until(lambda: w.state == "draining")
        w.close(0)
        gate.release.set()

    t = threading.Thread(target=closer)
    t.start()
    with pytest.raises(kvdump.LifecycleError, match="closed while"):
        w.wait_all_done(timeout=LIMIT)
    t.join(LIMIT)
    assert w.closed
    with pytest.raises(kvdump.LifecycleError):
        w.init()


def test_abort_wakes_a_submit_blocked_on_a_full_queue(make_writer) -> None:
    w = make_writer(num_threads=1, queue_capacity=1)
    gate = hold_a_worker(w)
    w.submit(lambda: None, label="fills-the-queue")
    outcome: list[BaseException | None] = []

    def blocked_submitter() -> None:
        try:
            w.submit(lambda: None, label="blocked", timeout=LIMIT)
            outcome.append(None)
        except kvdump.KvdumpError as e:
            outcome.append(e)

    t = threading.Thread(target=blocked_submitter)
    t.start()
    # The submitter is blocked once it holds no GIL and has not returned; give it a moment to get there.
    time.sleep(0.05)
    releaser = threading.Thread(target=lambda: wait_until(lambda: w.state == "aborting") and gate.release.set())
    releaser.start()
    report = w.abort()
    t.join(LIMIT)
    releaser.join(LIMIT)
    assert not t.is_alive()
    assert len(outcome) == 1
    # Either it was refused (the abort found it blocked) or, if it had not yet reached the full
    # queue's wait, it was queued and then cancelled; it never silently vanishes.
    if outcome[0] is None:
        assert report["cancelled"] == 2
    else:
        assert isinstance(outcome[0], kvdump.LifecycleError)
        assert report["cancelled"] == 1
    assert w.state == "idle"
    run_one_cycle(w)


# --- cancel_request ---------------------------------------------------------------------------------


def test_cancel_request_drops_only_that_requests_queued_tasks(make_writer) -> None:
    w = make_writer(num_threads=1)
    gate = Gate()
    rec = Recorder()
    w.init()
    w.submit(gate, label="gate", request="req-a")
    assert gate.started.wait(LIMIT)
    for i in range(3):
        w.submit(rec.task(f"a{i}"), label=f"a{i}", request="req-a", layer=i)
        w.submit(rec.task(f"b{i}"), label=f"b{i}", request="req-b", layer=i)
    assert w.cancel_request("req-a") == 3  # the running task of req-a is not cancelled
    assert w.cancel_request("req-a") == 0
    assert w.cancel_request("no-such-request") == 0
    gate.release.set()
    report = w.wait_all_done(timeout=LIMIT)
    assert report == kvdump.CycleReport(submitted=7, completed=4, failed=0, cancelled=3)
    assert sorted(rec.ran) == ["b0", "b1", "b2"]
    assert gate.finished.is_set()
    assert w.stats()["cancelled"] == 3
    run_one_cycle(w)


def test_cancel_request_lets_a_waiting_barrier_finish(make_writer) -> None:
    w = make_writer(num_threads=1)
    gate = hold_a_worker(w)
    w.submit(lambda: None, label="doomed", request="r")

    def canceller() -> None:
        assert wait_until(lambda: w.state == "draining")
        w.cancel_request("r")
        gate.release.set()

    t = threading.Thread(target=canceller)
    t.start()
    report = w.wait_all_done(timeout=LIMIT)
    t.join(LIMIT)
    assert report == kvdump.CycleReport(submitted=2, completed=1, failed=0, cancelled=1)


def test_cancel_request_when_idle(make_writer) -> None:
    w = make_writer()
    assert w.cancel_request("anything") == 0
    assert w.state == "idle"


# --- close ------------------------------------------------------------------------------------------


def test_close_with_an_open_cycle_cancels_queued_and_reports(make_writer, capfd) -> None:
    w = make_writer(num_threads=1)
    rec = Recorder()
    gate = hold_a_worker(w)
    for i in range(3):
        w.submit(rec.task(f"q{i}"), label=f"q{i}")
    # close() must not be used concurrently with other calls, so the release comes from a timer:
    # close() has to wait for the running task whichever moment it comes.
    timer = threading.Timer(0.5, gate.release.set)
    timer.start()
    w.close()
    timer.join(LIMIT)
    assert gate.finished.is_set()  # close waited for the running task
    assert rec.ran == []
    assert w.closed
    assert repr(w) == "AsyncWriter(closed)"
    err = capfd.readouterr().err
    assert "cancelled 3 queued" in err
    with pytest.raises(kvdump.LifecycleError):
        w.init()
    with pytest.raises(kvdump.LifecycleError):
        _ = w.state
    with pytest.raises(kvdump.LifecycleError):
        w.stats()
    w.close()  # idempotent


# Each call runs in a child process, so a crash (a binding that builds a Python error without the
# GIL) fails the test instead of killing the suite.


@pytest.mark.parametrize(
    "call",
    [
        "w.submit(lambda: None)",
        "w.wait_all_done()",
        "w.wait_all_done(timeout=1.0)",
        "w.abort()",
        "w.cancel_request('r')",
    ],
)
def test_calls_on_a_closed_writer_raise_lifecycle_error(call: str) -> None:
    script = textwrap.dedent(
        f"""
        import kvdump
        w = kvdump.AsyncWriter(kvdump.MemoryStore(capacity_bytes=1024), num_threads=1)
        w.close()
        try:
            {call}
        except kvdump.LifecycleError as e:
            print("LifecycleError:", e)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stderr[-2000:]}"
    assert "LifecycleError: the writer is closed" in proc.stdout


def test_close_when_idle_is_quiet(make_writer, capfd) -> None:
    w = make_writer()
    run_one_cycle(w)
    w.close()
    assert w.closed
    assert "kvdump" not in capfd.readouterr().err


def test_context_manager_closes(make_writer) -> None:
    store = kvdump.MemoryStore(capacity_bytes=1 << 16)
    with kvdump.AsyncWriter(store, num_threads=1) as w:
        run_one_cycle(w)
        assert not w.closed
    assert w.closed
    assert w.store is store


# --- construction -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"queue_capacity": 0},
        {"submit_timeout": -1.0},
        {"staging_timeout": float("nan")},
        {"staging_bytes": 0},
        {"num_threads": 100_000},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_constructor_rejects_bad_values(kwargs) -> None:
    with pytest.raises(kvdump.KvdumpValueError) as info:
        kvdump.AsyncWriter(kvdump.MemoryStore(capacity_bytes=1024), **kwargs)
    assert isinstance(info.value, ValueError)
    assert info.value.code == kvdump.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("num_threads", [0, -1])
def test_constructor_rejects_non_positive_threads(num_threads) -> None:
    with pytest.raises(ValueError):
        kvdump.AsyncWriter(kvdump.MemoryStore(capacity_bytes=1024), num_threads=num_threads)


@pytest.mark.parametrize("store", [None, {}, "memory://", object()])
def test_constructor_rejects_non_store(store) -> None:
    with pytest.raises(TypeError):
        kvdump.AsyncWriter(store)


def test_default_num_threads(make_writer) -> None:
    from kvdump.writer import default_num_threads

    w = make_writer(num_threads=None)
    n = w.stats()["num_threads"]
    assert n == default_num_threads()  # the cores torch's intra-op threads leave free
    assert 1 <= n <= 8


@pytest.mark.parametrize("fn", [None, 42, "print", b"x"])
def test_submit_rejects_non_callable(make_writer, fn) -> None:
    w = make_writer()
    w.init()
    with pytest.raises(TypeError):
        w.submit(fn, label="bad")
    assert w.state == "accepting"
    assert w.wait_all_done(timeout=LIMIT).submitted == 0
    run_one_cycle(w)

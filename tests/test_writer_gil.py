"""The writer never holds the GIL while it blocks, runs Python tasks on its own worker threads, and
finishes a layer's write or load without the GIL.

Each test makes the blocking call's return depend on another Python thread finishing a pure-Python
loop: if the call held the GIL, that thread could not run, and the call would hit its (bounded)
deadline and fail instead of hanging.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch

import kvdump
from support import LIMIT

COUNT_TO = 200_000  # a pure-Python loop: runs only while its thread holds the GIL


class Counter(threading.Thread):
    """Waits until the main thread announces `phase`, counts to COUNT_TO in Python, then sets
    `release`. Records which phase the main thread was in at every step it sampled."""

    def __init__(self, announced: list[str], phase: str, release: threading.Event) -> None:
        super().__init__(daemon=True)
        self.announced = announced
        self.phase = phase
        self.release = release
        self.count = 0
        self.phases_seen: set[str] = set()
        self.waited_for_phase = False

    def run(self) -> None:
        deadline = time.monotonic() + LIMIT
        while self.announced[0] != self.phase:
            if time.monotonic() > deadline:
                return
            time.sleep(0.0005)
        self.waited_for_phase = True
        n = 0
        while n < COUNT_TO:
            n += 1
            if n % 1000 == 0:
                self.count = n
                self.phases_seen.add(self.announced[0])
        self.count = n
        self.phases_seen.add(self.announced[0])
        self.release.set()


def blocking_task(started: threading.Event, release: threading.Event, saw: list[bool]) -> Callable[[], None]:
    def run() -> None:
        started.set()
        saw.append(release.wait(LIMIT))

    return run


@pytest.mark.timeout(120)
def test_wait_all_done_releases_the_gil(make_writer) -> None:
    w = make_writer(num_threads=1)
    started, release = threading.Event(), threading.Event()
    make_writer.events.append(release)
    saw_release: list[bool] = []
    announced = ["before"]
    counter = Counter(announced, "waiting", release)
    counter.start()

    w.init()
    w.submit(blocking_task(started, release, saw_release), label="blocked")
    assert started.wait(LIMIT)
    count_at_entry = counter.count
    announced[0] = "waiting"
    report = w.wait_all_done(timeout=LIMIT)  # returns only after the counter thread sets `release`
    announced[0] = "returned"
    count_at_exit = counter.count
    counter.join(LIMIT)

    assert report == kvdump.CycleReport(submitted=1, completed=1, failed=0, cancelled=0)
    assert saw_release == [True]  # the task was released by the counter, not by its own deadline
    assert counter.waited_for_phase
    assert count_at_entry == 0
    assert count_at_exit == COUNT_TO  # all counting happened while the main thread was inside the call
    assert counter.phases_seen == {"waiting"}


@pytest.mark.timeout(120)
def test_blocked_submit_releases_the_gil(make_writer) -> None:
    w = make_writer(num_threads=1, queue_capacity=1)
    started, release = threading.Event(), threading.Event()
    make_writer.events.append(release)
    saw_release: list[bool] = []
    announced = ["before"]
    counter = Counter(announced, "submitting", release)
    counter.start()
    ran = threading.Event()

    w.init()
    w.submit(blocking_task(started, release, saw_release), label="blocked")
    assert started.wait(LIMIT)
    w.submit(lambda: None, label="fills-the-queue")
    count_at_entry = counter.count
    announced[0] = "submitting"
    w.submit(ran.set, label="waits-for-space", timeout=LIMIT)  # room appears only after `release`
    announced[0] = "returned"
    count_at_exit = counter.count
    counter.join(LIMIT)
    report = w.wait_all_done(timeout=LIMIT)

    assert report == kvdump.CycleReport(submitted=3, completed=3, failed=0, cancelled=0)
    assert ran.is_set()
    assert saw_release == [True]
    assert count_at_entry == 0
    assert count_at_exit == COUNT_TO
    assert counter.phases_seen == {"submitting"}
    assert w.stats()["rejected"] == 0


@pytest.mark.timeout(120)
def test_abort_releases_the_gil_while_it_waits_for_running_tasks(make_writer) -> None:
    w = make_writer(num_threads=1)
    started, release = threading.Event(), threading.Event()
    make_writer.events.append(release)
    saw_release: list[bool] = []
    announced = ["before"]
    counter = Counter(announced, "aborting", release)
    counter.start()

    w.init()
    w.submit(blocking_task(started, release, saw_release), label="blocked")
    assert started.wait(LIMIT)
    announced[0] = "aborting"
    report = w.abort()
    announced[0] = "returned"
    count_at_exit = counter.count
    counter.join(LIMIT)

    assert report["finished_running"] == 1
    assert saw_release == [True]
    assert count_at_exit == COUNT_TO
    assert counter.phases_seen == {"aborting"}
    assert w.state == "idle"


def test_python_tasks_run_on_worker_threads(make_writer) -> None:
    num_threads = 3
    w = make_writer(num_threads=num_threads)
    main_ident = threading.get_ident()
    idents: list[int] = []
    lock = threading.Lock()
    # Every task waits until all `num_threads` of them run at once, which forces the pool to use
    # all of its threads (a pool running tasks on fewer threads would fail the barrier).
    barrier = threading.Barrier(num_threads, timeout=LIMIT)

    def task() -> None:
        with lock:
            idents.append(threading.get_ident())
        barrier.wait()

    w.init()
    for i in range(num_threads):
        w.submit(task, label=f"t{i}")
    assert w.wait_all_done(timeout=LIMIT).completed == num_threads
    assert len(idents) == num_threads
    assert main_ident not in idents
    assert len(set(idents)) == num_threads

    # The same pool threads serve later cycles.
    later: list[int] = []
    w.init()
    for i in range(20):
        w.submit(lambda: later.append(threading.get_ident()), label=f"l{i}")
    w.wait_all_done(timeout=LIMIT)
    assert len(later) == 20
    assert set(later) <= set(idents)


_FAILURES_WHILE_POLLING = """
import kvdump
w = kvdump.AsyncWriter(kvdump.MemoryStore(capacity_bytes=1 << 20), num_threads=2)
def boom():
    raise ValueError("a Python failure whose exception rides on the status")
for _ in range(200):
    w.init()
    for _ in range(20):
        w.submit(boom, label="raises")
    # Poll with the GIL held while workers record failures: a worker that released a failure's
    # Python exception under the writer's lock would wait for the GIL this thread holds.
    while w.stats()["failed"] % 20 != 0 or w.stats()["running"] or w.stats()["queue_depth"]:
        w.state
    try:
        w.wait_all_done(timeout=30)
    except kvdump.WriteError:
        pass
w.close()
print("done")
"""


def test_failures_recorded_while_the_caller_polls_never_deadlock() -> None:
    # A subprocess, so that a deadlock (which no in-process timeout can interrupt) fails the test.
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _FAILURES_WHILE_POLLING], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


@contextlib.contextmanager
def gil_kept_by_this_thread() -> Iterator[None]:
    """CPython hands the GIL to a waiting thread only once the switch interval has passed; with an
    interval far beyond the test's limits, this thread keeps the GIL for as long as it runs Python."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def completed_while_holding_the_gil(stats: Callable[[], dict], expected: int) -> int:
    """Polls ``stats()["completed"]`` (a call that keeps the GIL) until it reaches ``expected`` or
    LIMIT passes, never letting go of the GIL; returns the last count."""
    deadline = time.monotonic() + LIMIT
    while stats()["completed"] < expected and time.monotonic() < deadline:
        pass
    return stats()["completed"]


def layer_cache(blocks: int = 4) -> torch.Tensor:
    return torch.randn(2, blocks, 4, 2, 8)


@pytest.mark.timeout(120)
def test_a_layer_write_completes_while_the_caller_keeps_the_gil(make_writer) -> None:
    """A write task lets go of the caller's KV cache without the GIL. A task that dropped its
    reference to the caller's tensor object (which Python also holds) would need the GIL to do it,
    and would stall here until the caller next let go of it: a forward pays for that wait."""
    w = make_writer(num_threads=1)
    kv = layer_cache()
    w.init()
    with gil_kept_by_this_thread():
        kvdump.write_cache_store(w, 0, kv, torch.arange(4), torch.arange(100, 104))
        completed = completed_while_holding_the_gil(w.stats, 1)
    assert completed == 1
    assert w.wait_all_done(timeout=LIMIT).completed == 1


@pytest.mark.timeout(120)
def test_a_layer_load_completes_while_the_caller_keeps_the_gil(make_writer, make_loader) -> None:
    store = kvdump.MemoryStore(capacity_bytes=16 << 20)
    w = make_writer(store, num_threads=1)
    kv = layer_cache()
    with w.cycle():
        kvdump.write_cache_store(w, 0, kv, torch.arange(4), torch.arange(100, 104))
    loader = make_loader(store, num_threads=1)
    into = torch.zeros_like(kv)
    loader.start()
    with gil_kept_by_this_thread():
        loader.load_async(0, into, torch.arange(4), torch.arange(100, 104))
        completed = completed_while_holding_the_gil(loader.stats, 1)
    assert completed == 1
    loader.finish(timeout=LIMIT)
    assert torch.equal(into, kv)

"""Workers yield the cores to the forward: by default each writer thread runs in Linux's batch
scheduling class at a higher nice value than the caller; worker_nice=0 leaves it as the caller's;
the default thread count leaves torch's intra-op threads their cores."""

from __future__ import annotations

import os
import threading

import pytest
import torch

import kvdump
from kvdump.writer import default_idle_poll, default_num_threads

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="per-thread priorities are Linux-only")


def priority_of_this_thread() -> tuple[int, int]:
    return os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def priority_of_a_worker(**kwargs: object) -> tuple[int, int]:
    seen: list[tuple[int, int]] = []
    with kvdump.AsyncWriter(kvdump.MemoryStore(1 << 20), num_threads=1, **kwargs) as writer:
        with writer.cycle(timeout=30):
            writer.submit(lambda: seen.append(priority_of_this_thread()), label="probe")
    return seen[0]


def test_workers_run_in_the_batch_class_at_a_higher_nice_value() -> None:
    policy, nice = priority_of_this_thread()
    assert priority_of_a_worker() == (os.SCHED_BATCH, min(nice + 10, 19))
    assert priority_of_a_worker(worker_nice=3) == (os.SCHED_BATCH, min(nice + 3, 19))
    assert priority_of_this_thread() == (policy, nice)  # the caller is untouched


def test_zero_keeps_the_callers_priority() -> None:
    assert priority_of_a_worker(worker_nice=0) == priority_of_this_thread()


@pytest.mark.parametrize("bad", [-1, 20, 2.5, "low"])
def test_bad_worker_nice_is_refused_by_name(bad: object) -> None:
    with pytest.raises((kvdump.KvdumpValueError, kvdump.KvdumpTypeError), match="worker_nice"):
        kvdump.AsyncWriter(kvdump.MemoryStore(1 << 20), worker_nice=bad)  # type: ignore[arg-type]


def test_default_threads_leave_torch_its_cores() -> None:
    cores = len(os.sched_getaffinity(0))
    assert default_num_threads() == max(1, min(8, cores - torch.get_num_threads()))
    with kvdump.AsyncWriter(kvdump.MemoryStore(1 << 20)) as writer:
        assert writer.stats()["num_threads"] == default_num_threads()


@pytest.fixture
def torch_threads():
    """Sets torch's intra-op thread count for one test, and puts it back after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_workers_poll_by_default_only_where_torch_leaves_a_core_free(torch_threads) -> None:
    cores = len(os.sched_getaffinity(0))
    for forward in sorted({1, cores}):
        torch_threads(forward)
        expected = 0.0005 if cores > forward else 0.0
        assert default_idle_poll() == pytest.approx(expected)
        with kvdump.AsyncWriter(kvdump.MemoryStore(1 << 20)) as writer:
            assert writer.stats()["idle_poll"] == pytest.approx(expected)
        with kvdump.KVLoader(kvdump.MemoryStore(1 << 20)) as loader:
            assert loader.stats()["idle_poll"] == pytest.approx(expected)


def test_a_given_idle_poll_is_kept_whatever_the_cores(torch_threads) -> None:
    torch_threads(len(os.sched_getaffinity(0)))
    with kvdump.AsyncWriter(kvdump.MemoryStore(1 << 20), idle_poll=0.002) as writer:
        assert writer.stats()["idle_poll"] == pytest.approx(0.002)
    torch_threads(1)
    with kvdump.AsyncWriter(kvdump.MemoryStore(1 << 20), idle_poll=0) as writer:
        assert writer.stats()["idle_poll"] == 0.0
    assert kvdump.WriterOptions().idle_poll is None  # left to the writer or loader being built

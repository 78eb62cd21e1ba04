"""Soak: many short cycles with a few failing tasks; every failure is reported, none leaks.

The issue's acceptance: 1,000 cycles of init + 32 submits + wait_all_done, about 5% of the tasks
raising; the sum of WriteError.failed over the cycles equals the number of exceptions raised.
"""

from __future__ import annotations

import random
import threading

import pytest

import kvdump
from support import LIMIT

CYCLES = 1000
TASKS_PER_CYCLE = 32
FAILURE_RATE = 0.05


class TaskFailure(Exception):
    pass


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "num_threads, queue_capacity",
    [(4, 1024), (2, 4)],  # the second one makes submit block on a full queue now and then
    ids=["roomy-queue", "tight-queue"],
)
def test_soak_every_failure_is_reported(num_threads: int, queue_capacity: int) -> None:
    rng = random.Random(20240611)
    plan = [[rng.random() < FAILURE_RATE for _ in range(TASKS_PER_CYCLE)] for _ in range(CYCLES)]
    planned_failures = sum(map(sum, plan))
    assert 0.03 * CYCLES * TASKS_PER_CYCLE < planned_failures < 0.07 * CYCLES * TASKS_PER_CYCLE

    lock = threading.Lock()
    raised = 0
    ran = 0

    def task(fail: bool, cycle: int, index: int) -> None:
        nonlocal raised, ran
        with lock:
            ran += 1
            if fail:
                raised += 1
        if fail:
            raise TaskFailure(f"cycle {cycle} task {index}")

    reported_failed = 0
    failing_cycles = 0
    writer = kvdump.AsyncWriter(
        kvdump.MemoryStore(capacity_bytes=1 << 20), num_threads=num_threads, queue_capacity=queue_capacity
    )
    try:
        for cycle, fails in enumerate(plan):
            writer.init()
            for index, fail in enumerate(fails):
                writer.submit(lambda f=fail, c=cycle, i=index: task(f, c, i), label=f"c{cycle}-t{index}", layer=index)
            expected = sum(fails)
            try:
                report = writer.wait_all_done(timeout=LIMIT)
            except kvdump.WriteError as e:
                failing_cycles += 1
                reported_failed += e.failed
                assert e.failed == expected, f"cycle {cycle}"
                assert e.submitted == TASKS_PER_CYCLE
                assert isinstance(e.__cause__, TaskFailure)
                # The first failure names a task that was planned to fail, in this cycle.
                assert e.label.startswith(f"c{cycle}-t")
                assert fails[e.layer], f"cycle {cycle}: {e.label} was not planned to fail"
                assert str(e.__cause__) == f"cycle {cycle} task {e.layer}"
            else:
                assert expected == 0, f"cycle {cycle}: {expected} failure(s) went unreported"
                assert report == kvdump.CycleReport(TASKS_PER_CYCLE, TASKS_PER_CYCLE, 0, 0)
            assert writer.state == "idle"

        total = CYCLES * TASKS_PER_CYCLE
        assert ran == total
        assert raised == planned_failures
        assert reported_failed == raised
        assert failing_cycles == sum(1 for fails in plan if any(fails))
        assert writer.state == "idle"
        s = writer.stats()
        assert s["cycles"] == CYCLES
        assert s["failed"] == raised
        assert s["completed"] == total - raised
        assert s["submitted"] == total
        assert (s["cancelled"], s["rejected"], s["aborts"]) == (0, 0, 0)
        assert (s["queue_depth"], s["running"]) == (0, 0)
        assert s["queue_high_water"] <= queue_capacity
        assert s["submit_latency"]["count"] == total
        assert s["task_latency"]["count"] == total
        assert s["barrier_wait"]["count"] == CYCLES
    finally:
        writer.close()

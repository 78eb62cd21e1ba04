"""Cost of the writer's lifecycle from Python: cycles of init + N submits of a no-op + wait_all_done.

Measures, on this machine:
  * time per cycle (median, mean, p99) in µs, measured around init .. wait_all_done;
  * the calling thread's cost of one ``submit`` (perf_counter_ns around each call), median and p99;
  * the C++ side's own view from ``stats()``: submit latency, queue wait, task run time, barrier wait;
  * side by side, the same N no-op calls made inline on the calling thread, as the floor.

    python bench/bench_writer_cycles.py --cycles 1000 --tasks 32 --threads 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import kvdump
from timing import machine_info


def noop() -> None:
    pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(values_ns: list[int]) -> dict[str, float]:
    us = [v / 1e3 for v in values_ns]
    return {
        "count": len(us),
        "median_us": statistics.median(us),
        "mean_us": statistics.fmean(us),
        "p99_us": percentile(us, 0.99),
        "min_us": min(us),
        "max_us": max(us),
    }


def run_cycles(writer: kvdump.AsyncWriter, cycles: int, tasks: int) -> tuple[list[int], list[int]]:
    """Returns (ns per cycle, ns per submit call)."""
    cycle_ns: list[int] = []
    submit_ns: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(cycles):
        start = clock()
        writer.init()
        for _ in range(tasks):
            t0 = clock()
            writer.submit(noop)
            submit_ns.append(clock() - t0)
        writer.wait_all_done()
        cycle_ns.append(clock() - start)
    return cycle_ns, submit_ns


def run_inline(cycles: int, tasks: int) -> list[int]:
    cycle_ns: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(cycles):
        start = clock()
        for _ in range(tasks):
            noop()
        cycle_ns.append(clock() - start)
    return cycle_ns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=1000, help="measured cycles (default 1000)")
    parser.add_argument("--tasks", type=int, default=32, help="submits per cycle (default 32)")
    parser.add_argument("--threads", type=int, default=None, help="writer threads (default: kvdump's default)")
    parser.add_argument("--warmup", type=int, default=50, help="cycles run first on a throwaway writer")
    parser.add_argument("--out", type=Path, default=Path("bench/results/writer_cycles.json"))
    args = parser.parse_args(argv)
    if args.cycles < 1 or args.tasks < 1 or args.warmup < 0:
        parser.error("--cycles and --tasks must be >= 1, --warmup >= 0")

    store = kvdump.MemoryStore(capacity_bytes=1 << 20)
    queue_capacity = max(1024, args.tasks)  # submit never blocks on a full queue: measure the call itself
    if args.warmup:
        with kvdump.AsyncWriter(store, num_threads=args.threads, queue_capacity=queue_capacity) as warm:
            run_cycles(warm, args.warmup, args.tasks)

    with kvdump.AsyncWriter(store, num_threads=args.threads, queue_capacity=queue_capacity) as writer:
        wall_start = time.perf_counter()
        cycle_ns, submit_ns = run_cycles(writer, args.cycles, args.tasks)
        wall_s = time.perf_counter() - wall_start
        stats = writer.stats()
    inline_ns = run_inline(args.cycles, args.tasks)

    cycle = summarize(cycle_ns)
    submit = summarize(submit_ns)
    inline = summarize(inline_ns)
    cpp = {name: stats[name] for name in ("submit_latency", "queue_wait", "task_latency", "barrier_wait")}
    result = {
        "benchmark": "writer_cycles",
        "config": {
            "cycles": args.cycles,
            "tasks": args.tasks,
            "threads": stats["num_threads"],
            "queue_capacity": queue_capacity,
            "warmup": args.warmup,
        },
        "machine": machine_info(),
        "wall_s": wall_s,
        "cycle": cycle,
        "submit_python": submit,
        "inline_cycle": inline,
        "cycle_over_inline_median": cycle["median_us"] / inline["median_us"] if inline["median_us"] else None,
        "cpp": cpp,
        "counters": {k: stats[k] for k in ("submitted", "completed", "failed", "cycles", "queue_high_water")},
    }

    print(
        f"kvdump writer cycles: {args.cycles} cycles x {args.tasks} no-op submits, "
        f"{stats['num_threads']} threads, {os.cpu_count()} CPUs, Python {result['machine']['python']}"
    )
    rows = [
        ("cycle (init + submits + wait)", cycle["median_us"], cycle["mean_us"], cycle["p99_us"]),
        ("  same calls inline (floor)", inline["median_us"], inline["mean_us"], inline["p99_us"]),
        ("submit, calling thread (Python)", submit["median_us"], submit["mean_us"], submit["p99_us"]),
        (
            "submit, C++ side (stats)",
            cpp["submit_latency"]["p50_us"],
            cpp["submit_latency"]["mean_us"],
            cpp["submit_latency"]["p99_us"],
        ),
        ("queue wait (C++)", cpp["queue_wait"]["p50_us"], cpp["queue_wait"]["mean_us"], cpp["queue_wait"]["p99_us"]),
        (
            "task run incl. GIL (C++)",
            cpp["task_latency"]["p50_us"],
            cpp["task_latency"]["mean_us"],
            cpp["task_latency"]["p99_us"],
        ),
        (
            "barrier wait (C++)",
            cpp["barrier_wait"]["p50_us"],
            cpp["barrier_wait"]["mean_us"],
            cpp["barrier_wait"]["p99_us"],
        ),
    ]
    print(f"{'':34} {'median µs':>11} {'mean µs':>11} {'p99 µs':>11}")
    for name, med, mean, p99 in rows:
        print(f"{name:34} {med:11.2f} {mean:11.2f} {p99:11.2f}")
    print(f"per task (cycle median / tasks): {cycle['median_us'] / args.tasks:.2f} µs; wall {wall_s:.2f} s")
    if stats["failed"] or stats["completed"] != args.cycles * args.tasks:
        print(f"unexpected counters: {result['counters']}", file=sys.stderr)
        return 1

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

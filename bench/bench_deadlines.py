"""Do kvdump's deadlines hold while the store is stalled? Overrun of every bounded call, in ms.

The store stalls every call for ``--stall`` seconds (30 by default), far longer than the deadline
``--deadline`` (0.05 s) given to each call measured:

  barrier         writer.wait_all_done(timeout=d), a block write stuck in the store (WriteTimeout);
  abort           writer.abort(timeout=d) right after a block write got stuck;
  cycle           leaving ``with writer.cycle(timeout=d):`` whose write is stuck (barrier + abort);
  loader_finish   KVLoader.finish(timeout=d), a layer load stuck in the store's get;
  loader_abort    KVLoader.abort(timeout=d), a layer load stuck;
  loader_wait     KVLoader.wait_layer(layer, timeout=d), a layer load stuck.

Two stalled stores, measured separately: ``python``, a kvdump.PythonStore whose put and get wait on
a threading.Event for up to --stall seconds (the GIL released meanwhile), and ``delayed``,
kvdump.DelayedStore over a MemoryStore with a --stall delay (a C++ sleep, nothing can wake it).

The overrun of a call is its elapsed time minus d. A call either finds its task stuck in the store
(``stuck``), or, once every worker thread is left in an abandoned store call and the pool may start
no more replacements (``max_abandoned_threads``), queued behind an empty pool (``queued``): the pool
runs short, as designed, and the deadline must hold all the same. An abort of a queued task cancels
it at once, so its overrun is about -d. For the first half of each call kind's deadlines a writer
whose pool has run out is replaced by a fresh one, so that both cases get samples; the loader has no
max_abandoned_threads knob, so its bound is its thread count. Calls are interleaved round-robin
across the kinds. At the end every Event is set, so the Python store's stalled calls return and the
process exits promptly (DelayedStore's sleeping threads are detached and die with the process).

    python bench/bench_deadlines.py --deadlines 200 --deadline 0.05 --stall 30 --threads 2 --max-abandoned 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import kvdump
from kvdump.testing import StallingStore
from timing import machine_info, median, percentile

KINDS = ("barrier", "abort", "cycle", "loader_finish", "loader_abort", "loader_wait")
CALLS = {
    "barrier": "wait_all_done(timeout=d)",
    "abort": "abort(timeout=d)",
    "cycle": "cycle(timeout=d) exit",
    "loader_finish": "KVLoader.finish(timeout=d)",
    "loader_abort": "KVLoader.abort(timeout=d)",
    "loader_wait": "KVLoader.wait_layer(timeout=d)",
}
SHAPE = (2, 4, 16, 2, 64)  # [K and V, blocks, block_size, kv heads, head_dim]: 32 KiB per layer
IDS, HASHES = [0, 1, 2, 3], [101, 102, 103, 104]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--deadlines",
        "--repeats",
        type=int,
        default=200,
        dest="deadlines",
        help="deadlines measured per call kind and store (default 200)",
    )
    p.add_argument("--deadline", type=float, default=0.05, help="the deadline d given to each call, seconds (0.05)")
    p.add_argument("--stall", type=float, default=30.0, help="how long the store stalls each call, seconds (30)")
    p.add_argument("--threads", type=int, default=2, help="worker threads of each writer and loader (default 2)")
    p.add_argument(
        "--max-abandoned",
        type=int,
        default=2,
        help="writers' max_abandoned_threads: stuck threads that are still replaced (default 2)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="longest wait, seconds, for a submitted task to enter the stalled store (default 2)",
    )
    p.add_argument("--stores", default="python,delayed", help="comma-separated: python, delayed (default both)")
    p.add_argument("--out", type=Path, default=Path("bench/results/deadlines.json"))
    args = p.parse_args(argv)
    if min(args.deadlines, args.threads, args.max_abandoned) < 1:
        p.error("--deadlines, --threads and --max-abandoned must be >= 1")
    if not 0 < args.deadline < args.stall:
        p.error("--deadline must be > 0 and shorter than --stall")
    args.stores = [s for s in args.stores.split(",") if s]
    if not args.stores or set(args.stores) - {"python", "delayed"}:
        p.error("--stores takes python and/or delayed")
    return args


def block_record(key: str) -> bool:
    return not key.endswith("/commit")


class Stores:
    """The put side and the get side of one stalled store, the loader's blocks already stored."""

    def __init__(self, kind: str, stall: float, cache: torch.Tensor) -> None:
        self.kind = kind
        self.python: StallingStore | None = None
        if kind == "python":
            # Block puts and gets wait on ``release`` for up to ``stall`` s, then go through (a slow
            # store, not a broken one); commit records are never held. The blocks stored below go
            # to ``inner`` directly, so they are not held either.
            self.python = StallingStore(
                kvdump.MemoryStore(capacity_bytes=256 << 20),
                holds_put=block_record,
                holds_get=block_record,
                limit=stall,
                fails_at_limit=False,
            )
            inner, self.put_side, self.get_side = self.python.inner, self.python, self.python
        else:
            inner = kvdump.MemoryStore(capacity_bytes=256 << 20)
            self.put_side = kvdump.DelayedStore(inner, put_delay=stall)
            self.get_side = kvdump.DelayedStore(inner, get_delay=stall)
        with kvdump.AsyncWriter(inner, num_threads=1) as setup:
            with setup.cycle(timeout=30):
                kvdump.write_cache_store(setup, 0, cache, IDS, HASHES)

    def release(self) -> None:
        if self.python is not None:
            self.python.release.set()

    def drain(self, limit: float) -> None:
        """Wait (at most ``limit`` s) until no released Python call is still on its way out."""
        deadline = time.monotonic() + limit
        while self.python is not None and self.python.held and time.monotonic() < deadline:
            time.sleep(0.001)


def live_threads(stats: dict[str, Any]) -> int:
    # Serving threads, as far as the counters tell while no stalled call has returned yet.
    return stats["threads_started"] - stats["threads_in_abandoned_calls"]


def settle(pool: kvdump.AsyncWriter, limit: float) -> bool:
    """Wait until the task just queued runs inside the store; False when the pool has no thread."""
    if live_threads(pool.stats()) <= 0:
        return pool.stats()["running"] > 0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pool.stats()["running"] > 0:
            return True
        time.sleep(0.0005)
    return pool.stats()["running"] > 0


class Kind:
    """One call kind on one store: its writer or loader, replaced while it has run out of threads
    during the first half of its deadlines."""

    def __init__(self, name: str, stores: Stores, args: argparse.Namespace, cache: torch.Tensor) -> None:
        self.name = name
        self.stores = stores
        self.args = args
        self.cache = cache
        self.dst = torch.zeros(SHAPE)
        self.pools_made = 0
        self.retired: list[Any] = []
        self.overrun_ms: list[float] = []
        self.stuck: list[bool] = []
        self.unexpected: list[str] = []
        self.target = self._make()

    @property
    def is_loader(self) -> bool:
        return self.name.startswith("loader")

    def _make(self) -> Any:
        self.pools_made += 1
        if self.is_loader:
            return kvdump.KVLoader(self.stores.get_side, num_threads=self.args.threads)
        return kvdump.AsyncWriter(
            self.stores.put_side, num_threads=self.args.threads, max_abandoned_threads=self.args.max_abandoned
        )

    def pool(self) -> kvdump.AsyncWriter:
        return self.target.writer if self.is_loader else self.target

    def _start(self) -> None:
        if self.is_loader:
            self.target.start()
            self.target.load_async(0, self.dst, IDS, HASHES)
        else:
            self.target.init()
            kvdump.write_cache_store(self.target, 0, self.cache, IDS, HASHES, request="stalled")

    def _expect_timeout(self, call: Callable[[], Any]) -> None:
        try:
            call()
            self.unexpected.append(f"{self.name}: returned instead of raising WriteTimeout")
        except kvdump.WriteTimeout:
            pass

    def run_one(self, index: int) -> None:
        d = self.args.deadline
        if index < self.args.deadlines // 2 and live_threads(self.pool().stats()) <= 0:
            self.retired.append(self.target)
            self.target = self._make()
        clock = time.perf_counter
        if self.name == "cycle":
            writer = self.target
            try:
                with writer.cycle(timeout=d):
                    kvdump.write_cache_store(writer, 0, self.cache, IDS, HASHES, request="stalled")
                    stuck = settle(writer, self.args.settle)
                    start = clock()
                self.unexpected.append("cycle: left without WriteTimeout")
            except kvdump.WriteTimeout:
                pass
            elapsed = clock() - start
        else:
            self._start()
            stuck = settle(self.pool(), self.args.settle)
            start = clock()
            if self.name == "barrier":
                self._expect_timeout(lambda: self.target.wait_all_done(timeout=d))
            elif self.name == "loader_finish":
                self._expect_timeout(lambda: self.target.finish(timeout=d))
            elif self.name == "loader_wait":
                self._expect_timeout(lambda: self.target.wait_layer(0, timeout=d))
            else:  # abort, loader_abort
                self.target.abort(timeout=d)
            elapsed = clock() - start
            if self.pool().state != "idle":
                self.target.abort(timeout=0)  # untimed: back to idle for the next deadline
        if self.pool().state != "idle":
            self.unexpected.append(f"{self.name}: left the pool {self.pool().state}")
        self.overrun_ms.append((elapsed - d) * 1e3)
        self.stuck.append(stuck)

    def close(self) -> None:
        for target in [*self.retired, self.target]:
            target.close(0)


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "count": len(values),
        "min_ms": min(values),
        "median_ms": median(values),
        "p99_ms": percentile(values, 0.99),
        "max_ms": max(values),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cache = torch.randn(SHAPE)
    wall = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    all_stores: list[Stores] = []
    kinds_by_store: dict[str, list[Kind]] = {}
    try:
        for store_kind in args.stores:
            stores = Stores(store_kind, args.stall, cache)
            all_stores.append(stores)
            kinds = [Kind(name, stores, args, cache) for name in KINDS]
            kinds_by_store[store_kind] = kinds
            for index in range(args.deadlines):
                shift = index % len(kinds)
                for kind in kinds[shift:] + kinds[:shift]:
                    kind.run_one(index)
    finally:
        for stores in all_stores:
            stores.release()
        for kinds in kinds_by_store.values():
            for kind in kinds:
                kind.close()
    wall = time.perf_counter() - wall

    # The Python store's released calls return through the GIL: let them before the interpreter ends.
    for stores in all_stores:
        stores.drain(limit=10.0)

    unexpected: list[str] = []
    for store_kind, kinds in kinds_by_store.items():
        results[store_kind] = {}
        for kind in kinds:
            stuck = [o for o, s in zip(kind.overrun_ms, kind.stuck) if s]
            queued = [o for o, s in zip(kind.overrun_ms, kind.stuck) if not s]
            results[store_kind][kind.name] = {
                "call": CALLS[kind.name],
                "all": summary(kind.overrun_ms),
                "stuck": summary(stuck),
                "queued": summary(queued),
                "pools_made": kind.pools_made,
                "raw_overrun_ms": kind.overrun_ms,
                "raw_stuck": kind.stuck,
            }
            unexpected += kind.unexpected

    result: dict[str, Any] = {
        "benchmark": "deadlines",
        "config": {
            "deadlines_per_kind": args.deadlines,
            "deadline_s": args.deadline,
            "stall_s": args.stall,
            "threads": args.threads,
            "writer_max_abandoned_threads": args.max_abandoned,
            "loader_max_abandoned_threads": args.threads,
            "settle_s": args.settle,
            "stores": args.stores,
            "layer_bytes": cache.numel() * cache.element_size(),
        },
        "machine": machine_info(),
        "wall_s": wall,
        "overrun": results,
        "unexpected": unexpected,
    }

    print(
        f"deadline overrun (elapsed - d), d = {args.deadline * 1e3:g} ms, store stalled {args.stall:g} s per call; "
        f"{args.deadlines} deadlines per call kind and store, interleaved; {args.threads} threads, writers' "
        f"max_abandoned_threads {args.max_abandoned}; {os.cpu_count()} CPUs; wall {wall:.1f} s"
    )
    header = (
        f"{'store':8} {'call':32} {'tasks':>8} {'n':>4} {'min ms':>8} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}"
    )
    print(header)
    print("-" * len(header))
    for store_kind, per_kind in results.items():
        for name in KINDS:
            entry = per_kind[name]
            for regime in ("all", "stuck", "queued"):
                s = entry[regime]
                if s is None or (regime != "all" and s["count"] == entry["all"]["count"]):
                    continue
                label = entry["call"] if regime == "all" else ""
                print(
                    f"{store_kind if regime == 'all' else '':8} {label:32} {regime:>8} {s['count']:4d} "
                    f"{s['min_ms']:8.2f} {s['median_ms']:10.2f} {s['p99_ms']:8.2f} {s['max_ms']:8.2f}"
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if unexpected:
        print(f"unexpected outcomes ({len(unexpected)}): {unexpected[:5]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

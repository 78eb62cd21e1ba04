"""Write and load bandwidth of every store through kvdump, and what a store written in Python costs
the caller's Python thread.

For each store (memory, file, a Python DictStore, Mooncake on a local cluster), a forward's worth of
KV (``--layers`` layers of ``--blocks`` blocks) is written with write_cache_store + one barrier, and
loaded back with the async per-layer loader. Each store is measured interleaved, round by round,
with the yardstick: ``torch.index_select(out=)`` of the same blocks into memory allocated up front
(``write/copy`` and ``load/copy`` are the ratios of their medians). Each write goes under fresh keys
(Mooncake keeps the first value of a key, so rewriting the same keys would measure nothing).

In separate rounds, while the workers write, a Python thread counts loop iterations;
``python_share`` is its rate relative to an idle moment just before. It drops both for CPU contention
(this VM has 2 cores) and for GIL hand-offs
to a Python store, so compare stores with each other, not with 1.0. For Mooncake, the raw client
(``batch_put_from`` / ``batch_get_into`` on one registered buffer, no kvdump) gives the ceiling.

    python bench/bench_store_bandwidth.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import kvdump
from kvdump.testing import DictStore
from timing import interleaved, machine_info, median


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--blocks", type=int, default=192)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--stores", default="memory,file,python,mooncake")
    p.add_argument("--out", type=Path, default=Path("bench/results/store_bandwidth.json"))
    return p.parse_args()


class Spinner:
    """Counts Python loop iterations on its own thread: how much the GIL and CPU leave to Python."""

    def __init__(self) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.count += 1

    def __enter__(self) -> Spinner:
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.rate = self.count / (time.perf_counter() - self._start)


def idle_spin_rate(seconds: float) -> float:
    with Spinner() as s:
        time.sleep(seconds)
    return s.rate


class StoreRun:
    """One store's writer and loader, and the figures of its timed rounds."""

    def __init__(self, name: str, store: kvdump.CacheStore, args: argparse.Namespace, kv: list[torch.Tensor]) -> None:
        self.name, self.store, self.args, self.kv = name, store, args, kv
        self.ids = torch.arange(args.blocks)  # tensors, as an engine passes them
        self.namespace = f"bw-{uuid.uuid4().hex[:10]}"
        self.writer: kvdump.AsyncWriter | None = kvdump.AsyncWriter(
            store,
            num_threads=args.threads,
            key_space=kvdump.KeySpace(self.namespace),
            staging_bytes=self.writer_staging(),
        )
        self.loader = kvdump.KVLoader(
            store,
            key_space=kvdump.KeySpace(self.namespace),
            num_threads=args.threads,
            staging_bytes=self.writer_staging(),
        )
        self.round = 0
        # Allocated and touched once, as an engine's KV cache is: a load measures the copy, not page faults.
        self.outs = [torch.zeros_like(t) for t in kv]
        self.write_spin: list[float] = []
        self.idle_spin: list[float] = []

    def hashes(self) -> torch.Tensor:
        # New keys every round: Mooncake keeps the first value of a key, so rewriting would do nothing.
        return torch.arange(self.args.blocks) + (self.round << 32)

    def measure_idle(self) -> None:
        self.idle_spin.append(idle_spin_rate(0.05))

    def write(self) -> None:
        self.round += 1
        hashes = self.hashes()
        with self.writer.cycle():
            for layer, kv in enumerate(self.kv):
                kvdump.write_cache_store(self.writer, layer, kv, self.ids, hashes)

    def write_beside_python(self) -> None:
        """A write while a Python thread spins; separate from the bandwidth rounds, whose figures the
        spinning thread (one of two cores) would distort."""
        with Spinner() as spin:
            self.write()
        self.write_spin.append(spin.rate)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.loader.close()
            self.writer = None

    def writer_staging(self) -> int:
        return 2 * self.kv[0].numel() * self.kv[0].element_size() + (4 << 20)

    def load(self) -> None:
        outs = self.outs
        for out in outs[-1:]:
            out.zero_()  # so the check below sees this load's bytes, not the last one's
        hashes = self.hashes()
        self.loader.start()
        for layer, out in enumerate(outs):
            self.loader.load_async(layer, out, self.ids, hashes)
        self.loader.finish()
        if not torch.equal(outs[-1], self.kv[-1]):
            raise AssertionError(f"{self.name}: loaded KV differs from what was written")


class IndexSelectCopy:
    """The yardstick: the same blocks copied by ``torch.index_select(out=)`` into memory allocated
    once up front, one call per layer (K and V together), as a store with no overhead at all would."""

    def __init__(self, kv: list[torch.Tensor], blocks: int) -> None:
        self.kv = kv
        self.ids = torch.arange(blocks)
        self.dest = [torch.empty_like(t) for t in kv]
        self.back = [torch.empty_like(t) for t in kv]
        for src, dst in zip(self.kv, self.dest):  # touch every page before timing
            torch.index_select(src, 1, self.ids, out=dst)
            dst.zero_()

    def write(self) -> None:
        for src, dst in zip(self.kv, self.dest):
            torch.index_select(src, 1, self.ids, out=dst)

    def load(self) -> None:
        self.back[-1].zero_()  # the same zeroing and check as each store's load
        for src, dst in zip(self.dest, self.back):
            torch.index_select(src, 1, self.ids, out=dst)
        if not torch.equal(self.back[-1], self.kv[-1]):
            raise AssertionError("index_select copy differs")


def python_layer_share(run: StoreRun, rounds: int) -> dict[str, float]:
    """Of the time the workers spend in MooncakeStore's batch methods, how much is not Mooncake's
    client: the trampoline, the GIL hand-offs and MooncakeStore's own Python. Timed in extra rounds
    with proxies, so the bandwidth rounds stay unperturbed."""
    store: Any = run.store
    totals = {"store": 0.0, "client": 0.0}
    lock = threading.Lock()

    def timed(fn: Callable[..., Any], bucket: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    totals[bucket] += time.perf_counter() - start

        return call

    class TimedClient:
        def __init__(self, client: Any) -> None:
            self._client = client

        def __getattr__(self, name: str) -> Any:
            return timed(getattr(self._client, name), "client")

    client = store._client
    store._client = TimedClient(client)
    store.batch_put = timed(type(store).batch_put.__get__(store), "store")
    store.batch_get_into = timed(type(store).batch_get_into.__get__(store), "store")
    try:
        for _ in range(rounds):
            run.write()
            run.load()
    finally:
        store._client = client
        del store.batch_put, store.batch_get_into
    return {
        "store_method_s": totals["store"],
        "client_s": totals["client"],
        "python_layer_fraction": (totals["store"] - totals["client"]) / totals["store"],
    }


def raw_mooncake(store: Any, nbytes: int, record: int, layers: int, repeats: int) -> dict[str, float]:
    """The Mooncake client alone on one thread: the same record-sized objects, one batch per layer
    as kvdump sends them, from one registered buffer (no gather, no checksums, no Python store)."""
    import numpy as np

    buffer = np.random.randint(0, 255, nbytes, dtype=np.uint8)
    address = buffer.ctypes.data
    client = store._client
    if client.register_buffer(address, nbytes) != 0:
        raise RuntimeError("raw Mooncake: register_buffer failed")
    per_layer = nbytes // record // layers
    put_s, get_s = [], []
    try:
        for _ in range(repeats):
            prefix = f"raw-{uuid.uuid4().hex[:10]}"
            batches = []
            for layer in range(layers):
                first = layer * per_layer
                keys = [f"{prefix}/{layer}/{i}" for i in range(per_layer)]
                batches.append((keys, [address + (first + i) * record for i in range(per_layer)], [record] * per_layer))
            start = time.perf_counter()
            codes = [c for keys, addrs, sizes in batches for c in client.batch_put_from(keys, addrs, sizes)]
            put_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            got = [c for keys, addrs, sizes in batches for c in client.batch_get_into(keys, addrs, sizes)]
            get_s.append(time.perf_counter() - start)
            if min(codes) < 0 or min(got) < 0:
                raise RuntimeError(f"raw Mooncake put/get failed: {min(codes)} / {min(got)}")
    finally:
        client.unregister_buffer(address)
    return {"write_gbps": nbytes / median(put_s) / 1e9, "load_gbps": nbytes / median(get_s) / 1e9}


def main() -> int:
    args = parse_args()
    torch.manual_seed(0)
    shape = (2, args.blocks, args.block_size, args.kv_heads, args.head_dim)
    kv = [torch.randn(shape, dtype=torch.float16) for _ in range(args.layers)]
    nbytes = sum(t.numel() * t.element_size() for t in kv)
    record = 2 * args.block_size * args.kv_heads * args.head_dim * 2
    print(
        f"{args.layers} layers x {args.blocks} blocks, {record / 1024:.0f} KiB per block record, "
        f"{nbytes / 2**20:.0f} MiB per forward; {args.threads} worker threads",
        flush=True,
    )

    cleanup: list[Callable[[], None]] = []
    stores: dict[str, kvdump.CacheStore] = {}
    wanted = args.stores.split(",")
    tmp = tempfile.TemporaryDirectory(prefix="kvdump-bench-")
    cleanup.append(tmp.cleanup)
    if "memory" in wanted:
        stores["memory"] = kvdump.MemoryStore(capacity_bytes=(args.repeats + 2) * nbytes * 2)  # evicts past 90%
    if "file" in wanted:
        stores["file"] = kvdump.FileStore(os.path.join(tmp.name, "files"))
    if "python" in wanted:
        stores["python"] = DictStore(capacity_bytes=(2 * args.repeats + 2) * nbytes * 2)
    cluster = None
    if "mooncake" in wanted:
        from kvdump.mooncake_cluster import LocalMooncakeCluster

        storage = (3 * args.repeats + 3) * nbytes * 2 + (256 << 20)  # bandwidth, spinner and proxy rounds, raw
        cluster = LocalMooncakeCluster(os.path.join(tmp.name, "mooncake"), storage_bytes=storage).start()
        stores["mooncake"] = kvdump.open_store(cluster.url(global_segment_size=0, local_buffer_size=64 << 20))
    runs = {name: StoreRun(name, store, args, kv) for name, store in stores.items()}
    baseline = IndexSelectCopy(kv, args.blocks)

    try:
        # Each store is interleaved with its own rounds of the copy: a file store's background
        # writeback would otherwise tax whichever in-memory variant ran after it.
        results: dict[str, Any] = {}
        for name, run in runs.items():
            print(f"{name}: {args.repeats} rounds of write and load, interleaved with the copy...", flush=True)
            write_times = interleaved({"index_select": baseline.write, name: run.write}, args.repeats)
            # The loads read what the last write put.
            load_times = interleaved({"index_select": baseline.load, name: run.load}, args.repeats)
            copy_write, copy_load = median(write_times["index_select"]), median(load_times["index_select"])
            results[name] = {
                "write_gbps": nbytes / median(write_times[name]) / 1e9,
                "load_gbps": nbytes / median(load_times[name]) / 1e9,
                "copy_write_gbps": nbytes / copy_write / 1e9,
                "copy_load_gbps": nbytes / copy_load / 1e9,
                "write_vs_index_select": copy_write / median(write_times[name]),
                "load_vs_index_select": copy_load / median(load_times[name]),
                "write_ms_median": median(write_times[name]) * 1e3,
                "load_ms_median": median(load_times[name]) * 1e3,
                "write_s": write_times[name],
                "load_s": load_times[name],
                "copy_write_s": write_times["index_select"],
                "copy_load_s": load_times["index_select"],
            }
        interleaved(
            {n: r.write_beside_python for n, r in runs.items()},
            args.repeats,
            before_each=lambda n: runs[n].measure_idle(),
        )
        for name, run in runs.items():
            results[name]["python_share_during_write"] = median(
                [w / i for w, i in zip(run.write_spin, run.idle_spin)][1:]
            )
        if "mooncake" in stores:
            results["mooncake"]["python_layer"] = python_layer_share(runs["mooncake"], args.repeats)
            results["mooncake_raw_client"] = raw_mooncake(stores["mooncake"], nbytes, record, args.layers, args.repeats)
    finally:
        for run in runs.values():
            run.close()
        for store in stores.values():
            close = getattr(store, "close", None)
            if close is not None:
                close()
        if cluster is not None:
            cluster.stop()
        for fn in cleanup:
            fn()

    print(
        f"\n{'store':<22}{'write GB/s':>12}{'load GB/s':>12}{'copy w/l GB/s':>16}{'write/copy':>12}"
        f"{'load/copy':>12}{'python share':>14}"
    )
    for name, r in results.items():
        share = r.get("python_share_during_write")
        wr, lr = r.get("write_vs_index_select"), r.get("load_vs_index_select")
        copy = f"{r['copy_write_gbps']:.2f}/{r['copy_load_gbps']:.2f}" if "copy_write_gbps" in r else ""
        print(
            f"{name:<22}{r['write_gbps']:>12.2f}{r['load_gbps']:>12.2f}{copy:>16}"
            f"{'' if wr is None else f'{wr:.2f}x':>12}{'' if lr is None else f'{lr:.2f}x':>12}"
            f"{'' if share is None else f'{share:.2f}':>14}"
        )
    print(
        "copy = torch.index_select(out=) of the same blocks into memory allocated up front, interleaved round by "
        "round with each store"
    )
    if "mooncake" in results:
        raw = results["mooncake_raw_client"]
        layer = results["mooncake"]["python_layer"]
        print(
            f"\nkvdump on Mooncake / raw client: write {results['mooncake']['write_gbps'] / raw['write_gbps']:.2f}x, "
            f"load {results['mooncake']['load_gbps'] / raw['load_gbps']:.2f}x"
        )
        print(
            f"Python layer (trampoline, GIL, MooncakeStore) in the workers' store calls: "
            f"{layer['python_layer_fraction'] * 100:.1f}% of {layer['store_method_s'] * 1e3:.0f} ms"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "bytes_per_forward": nbytes,
                "record_bytes": record,
                "machine": machine_info(),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

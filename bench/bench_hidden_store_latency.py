"""Acceptance benchmark: does kvdump hide a slow store behind the prefill forward?

A 16-layer ReferenceLlama prefill dumps every layer's KV into a store whose every put call sleeps
``--put-delay`` seconds (``kvdump.DelayedStore`` over a ``MemoryStore``; each layer is one batched
put, so 16 layers x 2 ms = 32 ms of store latency per forward). The forward is timed, interleaved
round-robin in one run, in these ways:

  no_store     the plain prefill, nothing written;
  synchronous  per layer, inside the layer hook: init, write_cache_store, wait_all_done — the
               forward waits for every layer's store;
  kvdump       wrap_model around the prefill, with kvdump.prompt_dump.prompt_dump_hook as its layer
               hook: write_cache_store per layer returns at once, one barrier (and the commit
               records) after the forward;
  kvdump_hook  the same cycle run by hand (init, the prefill, wait_all_done), with a layer hook that
               calls write_cache_store itself: the calling thread's cost of each call is timed
               (perf_counter_ns around the call), and so are the forward and the barrier apart;
  kvdump_one_block  the kvdump_hook cycle on its own writer, writing one block per layer: the same
               store calls, wake-ups and barrier with next to no bytes to gather or put, so the
               machine's floor for hiding this store (what remains of kvdump's cost is the copies);
  probe_tiny_op  the plain prefill with a layer hook that times one tiny torch op (``x + y`` on 4
               floats): what any op call costs at that point of the forward on this machine (caches
               just churned by the layer's matmuls), as a yardstick for the write_cache_store figure.

Reports medians, the ratios to no_store, the absolute extra ms, the per-call cost next to the time
of one layer, and (kvdump_hook) how much of the extra time the forward itself lost and how much the
barrier waited. Publishing the commit records is the cycle's last task, so the barrier includes it.
The reference model calls its layer hook once a layer's attention wrote the KV, before the MLP.

    python bench/bench_hidden_store_latency.py --repeats 21 --layers 16 --put-delay 0.002 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import kvdump
from kvdump.hashing import block_hashes, flatten_blocks, model_salt
from kvdump.models import BlockAllocator, LlamaConfig, ReferenceLlama, blocks_needed
from kvdump.prompt_dump import prompt_dump_hook
from timing import interleaved, machine_info, median, summarize_ms

VARIANTS = ("no_store", "synchronous", "kvdump", "kvdump_hook", "kvdump_one_block", "probe_tiny_op")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=21, help="timed rounds of every variant (default 21)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--layers", type=int, default=16, help="decoder layers (default 16)")
    p.add_argument("--put-delay", type=float, default=0.002, help="seconds each store put call sleeps (0.002)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="kvdump writer threads (default: the library's, the cores torch's intra-op threads leave free)",
    )
    p.add_argument(
        "--idle-poll",
        type=float,
        default=None,
        help="AsyncWriter idle_poll in seconds (default: the library's, kvdump.writer.default_idle_poll(): "
        "polls where torch leaves a core free; 0: each call wakes a worker)",
    )
    p.add_argument("--worker-nice", type=int, default=10, help="AsyncWriter worker_nice (default 10)")
    p.add_argument("--hidden", type=int, default=512, help="hidden size (default 512; head_dim = hidden/8)")
    p.add_argument("--batch", type=int, default=2, help="prompts per prefill (default 2)")
    p.add_argument("--prompt-len", type=int, default=128, help="tokens per prompt (default 128)")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block (default 16)")
    p.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/results/hidden_store_latency.json"))
    args = p.parse_args(argv)
    if min(args.repeats, args.layers, args.threads or 1, args.batch, args.prompt_len, args.block_size) < 1:
        p.error("--repeats, --layers, --threads, --batch, --prompt-len and --block-size must be >= 1")
    if args.put_delay < 0 or args.warmup < 0:
        p.error("--put-delay and --warmup must be >= 0")
    if args.hidden % 8 or (args.hidden // 8) % 2:
        p.error("--hidden must be a multiple of 16 (8 heads of an even head_dim)")
    return args


def hot_write_cost_us(
    writer: kvdump.AsyncWriter, cache: Any, ids: torch.Tensor, hashes: torch.Tensor, rounds: int = 20
) -> float:
    """Median µs of write_cache_store called back to back (caches hot, workers busy)."""
    samples: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        writer.init()
        for layer, kv in enumerate(cache.layers):
            start = clock()
            kvdump.write_cache_store(writer, layer, kv, ids, hashes)
            samples.append(clock() - start)
        writer.abort()  # nothing of these rounds is published
    return median(samples) / 1e3


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    config = LlamaConfig(
        vocab_size=2048,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=8,
        num_kv_heads=2,
        head_dim=args.hidden // 8,
        intermediate_size=2 * args.hidden,
        seed=args.seed,
    )
    model = ReferenceLlama(config)
    rng = random.Random(args.seed)
    prompts = [[rng.randrange(config.vocab_size) for _ in range(args.prompt_len)] for _ in range(args.batch)]
    num_blocks = sum(blocks_needed(len(p), args.block_size) for p in prompts) + 8
    cache = model.new_cache(num_blocks, args.block_size)
    allocator = BlockAllocator(num_blocks)
    tables = [allocator.allocate(blocks_needed(len(p), args.block_size)) for p in prompts]
    salt = model_salt(config.name, config.dtype)
    hashes = [block_hashes(p, args.block_size, salt) for p in prompts]
    ids_t, hashes_t = flatten_blocks(hashes, tables)
    blocks = int(ids_t.numel())
    layer_bytes = blocks * (64 + cache.bytes_per_block)

    def slow_store() -> kvdump.CacheStore:
        inner = kvdump.MemoryStore(capacity_bytes=4 * args.layers * layer_bytes + (1 << 20))
        return kvdump.DelayedStore(inner, put_delay=args.put_delay)

    knobs = {"num_threads": args.threads, "idle_poll": args.idle_poll, "worker_nice": args.worker_nice}
    sync_writer = kvdump.AsyncWriter(slow_store(), **knobs)
    writer = kvdump.AsyncWriter(slow_store(), **knobs)
    one_block_writer = kvdump.AsyncWriter(slow_store(), **knobs)
    plain_prefill = model.prefill
    kvdump.wrap_model(model, writer, method="prefill")
    wrapped_prefill = model.prefill
    dump_hook = prompt_dump_hook(writer, prompts, tables, args.block_size, salt=salt, request="bench")

    def sync_hook(layer: int, kv: torch.Tensor) -> None:
        sync_writer.init()
        kvdump.write_cache_store(sync_writer, layer, kv, ids_t, hashes_t)
        sync_writer.wait_all_done()

    call_ns: list[int] = []
    clock = time.perf_counter_ns

    def timed_hook(layer: int, kv: torch.Tensor) -> None:
        start = clock()
        kvdump.write_cache_store(writer, layer, kv, ids_t, hashes_t)
        call_ns.append(clock() - start)

    split_forward_s: list[float] = []
    split_barrier_s: list[float] = []

    def timed_cycle() -> None:
        writer.init()
        start = time.perf_counter()
        plain_prefill(prompts, cache, tables, layer_hook=timed_hook)
        forward_end = time.perf_counter()
        writer.wait_all_done()
        split_forward_s.append(forward_end - start)
        split_barrier_s.append(time.perf_counter() - forward_end)

    one_id, one_hash = ids_t[:1].clone(), hashes_t[:1].clone()

    def one_block_hook(layer: int, kv: torch.Tensor) -> None:
        kvdump.write_cache_store(one_block_writer, layer, kv, one_id, one_hash)

    def one_block_cycle() -> None:
        one_block_writer.init()
        plain_prefill(prompts, cache, tables, layer_hook=one_block_hook)
        one_block_writer.wait_all_done()

    tiny_x, tiny_y = torch.ones(4), torch.ones(4)
    tiny_ns: list[int] = []

    def tiny_op_hook(layer: int, kv: torch.Tensor) -> None:
        start = clock()
        tiny_x + tiny_y  # noqa: B018
        tiny_ns.append(clock() - start)

    variants: dict[str, Callable[[], Any]] = {
        "no_store": lambda: plain_prefill(prompts, cache, tables),
        "synchronous": lambda: plain_prefill(prompts, cache, tables, layer_hook=sync_hook),
        "kvdump": lambda: wrapped_prefill(prompts, cache, tables, layer_hook=dump_hook),
        "kvdump_hook": timed_cycle,
        "kvdump_one_block": one_block_cycle,
        "probe_tiny_op": lambda: plain_prefill(prompts, cache, tables, layer_hook=tiny_op_hook),
    }

    wall = time.perf_counter()
    times = interleaved(variants, args.repeats, warmup=args.warmup)
    wall = time.perf_counter() - wall
    stats = writer.stats()
    sync_stats = sync_writer.stats()
    one_block_stats = one_block_writer.stats()
    hot_call_us = hot_write_cost_us(writer, cache, ids_t, hashes_t)
    writer.close()
    sync_writer.close()
    one_block_writer.close()

    forward = {name: summarize_ms(times[name]) for name in VARIANTS}
    base = forward["no_store"]["median_ms"]
    timed_rounds = slice(len(split_forward_s) - args.repeats, None)  # the warm-up rounds come first
    hook_forward_ms = median(split_forward_s[timed_rounds]) * 1e3
    hook_barrier_ms = median(split_barrier_s[timed_rounds]) * 1e3
    per_call_us = median(call_ns) / 1e3 if call_ns else 0.0
    tiny_op_us = median(tiny_ns) / 1e3 if tiny_ns else 0.0
    layer_ms = base / args.layers
    store_ms_per_forward = args.layers * args.put_delay * 1e3
    expected_tasks = (args.warmup + args.repeats) * args.layers
    result: dict[str, Any] = {
        "benchmark": "hidden_store_latency",
        "config": {
            "layers": args.layers,
            "hidden": args.hidden,
            "heads": 8,
            "kv_heads": 2,
            "head_dim": args.hidden // 8,
            "batch": args.batch,
            "prompt_len": args.prompt_len,
            "block_size": args.block_size,
            "blocks_per_layer": blocks,
            "bytes_per_layer": layer_bytes,
            "put_delay_s": args.put_delay,
            "store_latency_per_forward_ms": store_ms_per_forward,
            "writer_threads": stats["num_threads"],
            "writer_idle_poll_s": stats["idle_poll"],
            "torch_threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "warmup": args.warmup,
        },
        "machine": machine_info(),
        "wall_s": wall,
        "forward": forward,
        "ratio_vs_no_store": {name: forward[name]["median_ms"] / base for name in VARIANTS},
        "extra_ms_vs_no_store": {name: forward[name]["median_ms"] - base for name in VARIANTS},
        "write_cache_store_call_us": {
            "median_in_forward": per_call_us,
            "count": len(call_ns),
            "tiny_torch_op_in_forward": tiny_op_us,
            "median_back_to_back": hot_call_us,
        },
        "layer_ms": layer_ms,
        "kvdump_hook_split": {
            "forward_median_ms": hook_forward_ms,
            "forward_extra_ms_vs_no_store": hook_forward_ms - base,
            "barrier_median_ms": hook_barrier_ms,
        },
        "writer": {
            "barrier_wait_p50_ms": stats["barrier_wait"]["p50_us"] / 1e3,
            "task_p50_ms": stats["task_latency"]["p50_us"] / 1e3,
            "submit_p50_us": stats["submit_latency"]["p50_us"],
            "tasks": stats["completed"],
            "failed": stats["failed"] + sync_stats["failed"] + one_block_stats["failed"],
        },
        "raw_forward_s": times,
    }

    c = result["config"]
    print(
        f"hidden store latency: {args.layers} layers, hidden {args.hidden}, {args.batch} x {args.prompt_len} "
        f"tokens, {blocks} blocks/layer ({layer_bytes / 2**10:.0f} KiB), store put {args.put_delay * 1e3:g} ms "
        f"per call ({store_ms_per_forward:g} ms per forward), {c['writer_threads']} writer threads "
        f"(idle poll {c['writer_idle_poll_s'] * 1e3:g} ms), "
        f"{c['torch_threads']} torch threads, {os.cpu_count()} CPUs; {args.repeats} rounds, interleaved"
    )
    print(f"{'prefill forward':28} {'median ms':>10} {'p90 ms':>9} {'vs none':>8} {'extra ms':>9}")
    for name in VARIANTS:
        f = forward[name]
        print(
            f"  {name:26} {f['median_ms']:10.2f} {f['p90_ms']:9.2f} {f['median_ms'] / base:7.3f}x "
            f"{f['median_ms'] - base:9.2f}"
        )
    print(
        f"write_cache_store on the calling thread: {per_call_us:.1f} µs median in the forward "
        f"(one layer: {layer_ms:.2f} ms, so {per_call_us / 1e3 / layer_ms * 100:.2f}% of it); a 4-float "
        f"torch add at the same point: {tiny_op_us:.1f} µs; write_cache_store back to back, caches hot: "
        f"{hot_call_us:.1f} µs"
    )
    print(
        f"kvdump_hook apart: the forward {hook_forward_ms:.2f} ms ({hook_forward_ms - base:+.2f} ms vs no_store: "
        f"the calls, and the workers' share of the cores), then the barrier {hook_barrier_ms:.2f} ms (what was "
        f"left of the last layers' puts, and the commit records' put)"
    )
    print(
        f"kvdump_one_block: {result['ratio_vs_no_store']['kvdump_one_block']:.3f}x of no_store with one block per "
        f"layer: the store calls, wake-ups and barrier alone, this machine's floor for hiding this store"
    )
    print(
        f"kvdump/no_store {result['ratio_vs_no_store']['kvdump']:.3f}x, "
        f"sync/no_store {result['ratio_vs_no_store']['synchronous']:.3f}x; wall {wall:.1f} s"
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if (
        result["writer"]["failed"]
        or stats["completed"] != 2 * expected_tasks
        or one_block_stats["completed"] != expected_tasks
    ):
        print(
            f"unexpected writer counters: {stats['completed']} and {one_block_stats['completed']} completed, "
            f"failed {result['writer']['failed']}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

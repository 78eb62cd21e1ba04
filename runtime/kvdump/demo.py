"""The end-to-end demo: prefill with kvdump writing every layer, decode from a fresh cache loaded
from the store under different block ids, and check the tokens against a single-process run. Both
sides are the PD roles' own per-request work (:func:`kvdump.pd.prefill_into_store`,
:func:`kvdump.pd.decode_from_store`) on an in-process store; the demo adds the timings."""

from __future__ import annotations

import logging
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from kvdump.cache_ops import write_cache_store
from kvdump.hashing import model_salt
from kvdump.loader import KVLoader
from kvdump.model_dtypes import MODEL_DTYPES, torch_dtype
from kvdump.models import BlockAllocator, LlamaConfig, ReferenceLlama, blocks_needed, greedy_continue
from kvdump.pd.decode_from_store import decode_from_store
from kvdump.pd.prefill_into_store import prefill_into_store, prompt_blocks
from kvdump.progress import steps
from kvdump.writer import AsyncWriter

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """What the demo runs; every field has a command-line flag."""

    layers: int = field(default=8, metadata={"help": "decoder layers; each one's KV is written as it finishes"})
    hidden: int = field(default=512, metadata={"help": "hidden size of the reference Llama"})
    heads: int = field(default=8, metadata={"help": "attention heads"})
    kv_heads: int = field(default=2, metadata={"help": "KV heads (grouped-query attention when fewer than heads)"})
    head_dim: int = field(default=64, metadata={"help": "dimension of one head"})
    vocab: int = field(default=2048, metadata={"help": "vocabulary size"})
    dtype: str = field(default="float32", metadata={"help": "weights and KV cache dtype", "choices": MODEL_DTYPES})
    batch: int = field(default=4, metadata={"help": "prompts prefilled together (they share a system prompt)"})
    prompt_min: int = field(default=96, metadata={"help": "shortest prompt, in tokens"})
    prompt_max: int = field(default=192, metadata={"help": "longest prompt, in tokens"})
    block_size: int = field(default=16, metadata={"help": "tokens per KV block"})
    new_tokens: int = field(default=16, metadata={"help": "tokens generated per prompt on the decode side"})
    threads: int | None = field(
        default=None,
        metadata={
            "help": "writer and loader worker threads",
            "type": int,
            "default_text": "the library's: the cores torch's intra-op threads leave free, 1 to 8",
        },
    )
    repeats: int = field(
        default=7,
        metadata={"help": "timed prefills per variant, interleaved after one untimed round (the median is reported)"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the weights and prompts"})
    store_bytes: int = field(default=1 << 30, metadata={"help": "MemoryStore capacity in bytes"})
    store_latency_ms: float = field(
        default=0.0,
        metadata={
            "help": "milliseconds every store put call sleeps (a DelayedStore over the MemoryStore), "
            "standing in for a remote store: watch kvdump hide it while synchronous writes pay it",
            "aliases": ("--store-latency",),
        },
    )


@dataclass
class DemoReport:
    """Everything the demo measured; printed as a table or as JSON."""

    model: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, Any] = field(default_factory=dict)
    store: dict[str, Any] = field(default_factory=dict)
    forward_ms: dict[str, float] = field(default_factory=dict)
    store_latency_ms: float = 0.0
    write: dict[str, Any] = field(default_factory=dict)
    tokens_match: bool = False


def demo_prompts(cfg: DemoConfig) -> list[list[int]]:
    """The batch the demo runs: a common system prompt, then each prompt's own random tokens."""
    rng = random.Random(cfg.seed)
    shared = [rng.randrange(cfg.vocab) for _ in range(cfg.block_size * 2)]  # a common system prompt
    prompts = []
    for _ in range(cfg.batch):
        n = rng.randint(cfg.prompt_min, cfg.prompt_max)
        prompts.append(shared + [rng.randrange(cfg.vocab) for _ in range(n - len(shared))])
    return prompts


def _store(cfg: DemoConfig) -> tuple[Any, Any]:
    """The store a run writes to, and the MemoryStore under it (for its counters)."""
    import kvdump

    memory = kvdump.MemoryStore(cfg.store_bytes)
    if cfg.store_latency_ms <= 0:
        return memory, memory
    return kvdump.DelayedStore(memory, put_delay=cfg.store_latency_ms / 1e3), memory


def _tables(prompts: list[list[int]], allocator: BlockAllocator, block_size: int) -> list[list[int]]:
    return [allocator.allocate(blocks_needed(len(p), block_size)) for p in prompts]


def _time_interleaved_ms(variants: dict[str, Any], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median wall time of each variant, run round-robin (one untimed round first) so that a noisy
    machine slows them alike; and each variant's last result."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    results: dict[str, Any] = {}
    for round_index in steps(range(repeats + 1), "prefill rounds"):
        for name, fn in variants.items():
            start = time.perf_counter()
            results[name] = fn()
            if round_index > 0:
                times[name].append((time.perf_counter() - start) * 1e3)
        if round_index > 0:
            logger.debug("round %d: %s", round_index, ", ".join(f"{n} {t[-1]:.2f} ms" for n, t in times.items()))
    return {name: statistics.median(t) for name, t in times.items()}, results


class _CallingThreadProbe:
    """Stands in for ``write_cache_store`` in a prefill: times the call on the forward's thread next
    to a 4-float add timed at the same point (caches just churned by the layer), alternating which
    goes first."""

    def __init__(self) -> None:
        self.write_ns: list[int] = []
        self.tiny_ns: list[int] = []
        self._x = torch.ones(4)

    def __call__(
        self,
        writer: AsyncWriter,
        layer: int,
        kv: torch.Tensor,
        block_ids: torch.Tensor,
        block_hashes: torch.Tensor,
        *,
        request: str,
    ) -> None:
        clock = time.perf_counter_ns
        x = self._x
        if layer % 2 == 0:
            t0 = clock()
            x + x
            t1 = clock()
            write_cache_store(writer, layer, kv, block_ids, block_hashes, request=request)
            t2 = clock()
            self.tiny_ns.append(t1 - t0)
            self.write_ns.append(t2 - t1)
        else:
            t0 = clock()
            write_cache_store(writer, layer, kv, block_ids, block_hashes, request=request)
            t1 = clock()
            x + x
            t2 = clock()
            self.write_ns.append(t1 - t0)
            self.tiny_ns.append(t2 - t1)


def model_config(cfg: DemoConfig) -> LlamaConfig:
    """The reference model the demo runs."""
    return LlamaConfig(
        vocab_size=cfg.vocab,
        hidden_size=cfg.hidden,
        num_layers=cfg.layers,
        num_heads=cfg.heads,
        num_kv_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        intermediate_size=cfg.hidden * 2,
        dtype=torch_dtype(cfg.dtype),
        seed=cfg.seed,
    )


def key_salt(cfg: DemoConfig) -> str:
    """What the demo salts its keys with: its model's name and dtype, as every part of kvdump does."""
    model = model_config(cfg)
    return model_salt(model.name, model.dtype)


def run_demo(cfg: DemoConfig) -> DemoReport:
    """Run the demo, logging each stage on this module's logger."""

    torch.manual_seed(cfg.seed)
    model_cfg = model_config(cfg)
    model = ReferenceLlama(model_cfg)
    prompts = demo_prompts(cfg)
    blocks = sum(blocks_needed(len(p), cfg.block_size) for p in prompts)
    num_blocks = blocks + cfg.batch * (cfg.new_tokens // cfg.block_size + 2) + 8
    report = DemoReport()
    params = sum(p.numel() for p in model.parameters())
    report.model = {
        "layers": cfg.layers,
        "hidden": cfg.hidden,
        "kv_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "dtype": cfg.dtype,
        "parameters": params,
    }
    cache = model.new_cache(num_blocks, cfg.block_size)
    allocator = BlockAllocator(num_blocks)
    tables = _tables(prompts, allocator, cfg.block_size)
    salt = key_salt(cfg)
    stored_blocks = prompt_blocks(prompts, tables, cfg.block_size, salt)
    report.tokens = {
        "prompts": cfg.batch,
        "prompt_tokens": sum(map(len, prompts)),
        "blocks": blocks,
        "stored_blocks": stored_blocks.block_ids.numel(),
    }

    logger.info(
        "model: %d layers, %.1f M parameters, %s; %d prompts, %d tokens in %d blocks",
        cfg.layers,
        params / 1e6,
        cfg.dtype,
        cfg.batch,
        report.tokens["prompt_tokens"],
        blocks,
    )

    # Synchronous writes: the same per-layer op on the same blocks, but the forward waits for each
    # layer's store.
    sync_store, _ = _store(cfg)
    sync_writer = AsyncWriter(sync_store, num_threads=cfg.threads)

    def sync_hook(layer: int, kv: torch.Tensor) -> None:
        sync_writer.init()
        write_cache_store(sync_writer, layer, kv, stored_blocks.block_ids, stored_blocks.hashes)
        sync_writer.wait_all_done()

    # kvdump: the prefill role's own step; the layer op returns at once, one barrier at the end.
    store, memory = _store(cfg)
    writer = AsyncWriter(store, num_threads=cfg.threads)
    probe = _CallingThreadProbe()

    def prefill(**kwargs: Any) -> torch.Tensor:
        return prefill_into_store(model, writer, prompts, cache, tables, salt=salt, request="demo", **kwargs).logits

    logger.info(
        "1/2 prefill %d times each, interleaved: no store, synchronous writes, kvdump, "
        "and kvdump with the calling thread's cost probed",
        cfg.repeats,
    )
    forward_ms, results = _time_interleaved_ms(
        {
            "no_store": lambda: model.prefill(prompts, cache, tables),
            "synchronous": lambda: model.prefill(prompts, cache, tables, layer_hook=sync_hook),
            "kvdump": prefill,
            "probe": lambda: prefill(write_layer=probe),
        },
        cfg.repeats,
    )
    no_store_ms, sync_ms, kvdump_ms = forward_ms["no_store"], forward_ms["synchronous"], forward_ms["kvdump"]
    reference = greedy_continue(
        model, results["no_store"], prompts, cache, [list(t) for t in tables], cfg.new_tokens, allocator
    )
    sync_writer.close()
    stats = writer.stats()
    writer.close()

    # The decode role's own step per prompt: a fresh cache with different block ids, filled from the store.
    logger.info("2/2 decode side: lookup, load every layer into new block ids, recompute the tail, greedy decode")
    decode_cache = model.new_cache(num_blocks, cfg.block_size)
    decode_alloc = BlockAllocator(num_blocks, shuffle_seed=cfg.seed + 1)
    loader = KVLoader(store, num_threads=cfg.threads)
    try:
        decoded = [
            decode_from_store(
                model, loader, prompt, decode_cache, decode_alloc, cfg.new_tokens, salt=salt, load_timeout=60
            )
            for prompt in steps(prompts, "decode prompts")
        ]
    finally:
        loader.close()
    if any(d.loaded_blocks != d.full_blocks for d in decoded):
        raise RuntimeError(
            f"decode side loaded only {[d.loaded_blocks for d in decoded]} of {[d.full_blocks for d in decoded]} "
            f"blocks (committed {[d.committed_blocks for d in decoded]}; "
            f"load errors {[d.load_error for d in decoded if d.load_error]})"
        )
    store_stats = memory.stats()  # after the decode side's lookups and loads, so hits count them
    loaded_bytes = sum(d.loaded_blocks for d in decoded) * cfg.layers * decode_cache.bytes_per_block
    load_s = sum(d.load_seconds for d in decoded)
    generated = [d.generated for d in decoded]

    written = store_stats["used_bytes"]
    task_s = stats["task_latency"]["mean_us"] * stats["task_latency"]["count"] / 1e6
    report.store = {
        "kind": "memory",
        "entries": store_stats["entries"],
        "bytes": written,
        "capacity_bytes": store_stats["capacity_bytes"],
        "eviction": store_stats["eviction"],
        "hits": store_stats["hits"],
        "misses": store_stats["misses"],
        "evictions": store_stats["evictions"],
        "reclaimed": store_stats["reclaimed"],
    }
    report.store_latency_ms = cfg.store_latency_ms
    report.forward_ms = {
        "no_store": round(no_store_ms, 3),
        "synchronous": round(sync_ms, 3),
        "kvdump": round(kvdump_ms, 3),
    }
    report.write = {
        "bytes_per_forward": written,
        "write_GBps": round(written * cfg.repeats / task_s / 1e9, 3) if task_s > 0 else None,
        "load_GBps": round(loaded_bytes / load_s / 1e9, 3) if load_s > 0 else None,
        "submit_p50_us": stats["submit_latency"]["p50_us"],
        "call_in_forward_us": round(statistics.median(probe.write_ns) / 1e3, 2),
        "tiny_op_in_forward_us": round(statistics.median(probe.tiny_ns) / 1e3, 2),
        "barrier_p50_ms": round(stats["barrier_wait"]["p50_us"] / 1e3, 3),
        "tasks": stats["completed"],
        "failed": stats["failed"],
    }
    report.tokens["generated_per_prompt"] = cfg.new_tokens
    report.tokens["loaded_blocks"] = sum(d.loaded_blocks for d in decoded)
    report.tokens["recomputed_tokens"] = sum(d.recomputed_tokens for d in decoded)
    report.tokens["reference"] = reference
    report.tokens["pd"] = generated
    report.tokens_match = generated == reference
    return report


def _what_is_hidden(report: DemoReport) -> list[str]:
    latency = report.store_latency_ms
    store = (
        f"a store whose every put call takes {latency:g} ms"
        if latency > 0
        else "an in-process MemoryStore (--store-latency-ms 2 stands in for a remote store)"
    )
    return [
        f"  what this shows: the store here is {store}.",
        "  kvdump hides the store's latency behind the layers still computing; synchronous writes pay",
        "  it in every layer. What it cannot hide on a CPU-only machine is the workers' own time: their",
        "  gathers and checksums, and each wake-up to run a store call, share the cores with the forward",
        "  (at a lower priority, so they take what the forward leaves idle, but a core that torch's",
        "  threads all use is never idle for long), and the forward ends with one barrier for the last",
        "  layers' writes and the commit records.",
    ]


def format_report(report: DemoReport) -> str:
    """The human-readable report."""
    m, t, w, f = report.model, report.tokens, report.write, report.forward_ms
    lines = [
        "",
        "kvdump demo — prefill → MemoryStore → decode in new block ids",
        f"  model           {m['layers']} layers, hidden {m['hidden']}, {m['kv_heads']} KV heads x {m['head_dim']}, "
        f"{m['dtype']}, {m['parameters'] / 1e6:.1f} M params",
        f"  tokens          {t['prompts']} prompts, {t['prompt_tokens']} prompt tokens, {t['blocks']} blocks, "
        f"{t['generated_per_prompt']} generated each",
        f"  stored          {t['stored_blocks']} distinct full blocks (a partial last block is never stored)",
        f"  decode side     {t['loaded_blocks']} blocks loaded into new block ids, {t['recomputed_tokens']} prompt "
        "tokens recomputed (the tail after the last full block, and always the last token)",
        f"  bytes written   {w['bytes_per_forward'] / 2**20:.2f} MiB per prefill ({report.store['entries']} records)",
        f"  write bandwidth {w['write_GBps']} GB/s on the workers; load {w['load_GBps']} GB/s",
        f"  calling thread  write_cache_store {w['call_in_forward_us']:.1f} µs median inside the forward, "
        f"a 4-float add at the same point {w['tiny_op_in_forward_us']:.1f} µs "
        f"({w['call_in_forward_us'] / max(w['tiny_op_in_forward_us'], 0.01):.1f}x); queueing alone (submit) "
        f"{w['submit_p50_us']:.2f} µs",
        f"  store           {report.store['bytes'] / 2**20:.2f} of "
        f"{report.store['capacity_bytes'] / 2**20:.0f} MiB used, "
        f"policy {report.store['eviction']}: {report.store['hits']} hits, {report.store['misses']} misses, "
        f"{report.store['evictions']} evictions, {report.store['reclaimed']} reclaimed",
        "",
        "  prefill forward time (median)      ms    vs no store",
        f"    no store                    {f['no_store']:9.2f}    1.00x",
        f"    synchronous writes          {f['synchronous']:9.2f}    {f['synchronous'] / f['no_store']:.2f}x",
        f"    kvdump (async + barrier)    {f['kvdump']:9.2f}    {f['kvdump'] / f['no_store']:.2f}x",
        "",
        *_what_is_hidden(report),
        "",
        f"  first prompt, reference tokens: {t['reference'][0]}",
        f"  first prompt, PD tokens:        {t['pd'][0]}",
        f"  tokens match across all prompts: {'YES' if report.tokens_match else 'NO'}",
    ]
    return "\n".join(lines)


def report_json(report: DemoReport) -> dict[str, Any]:
    return asdict(report)

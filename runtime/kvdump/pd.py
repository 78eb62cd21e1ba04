"""The two roles of PD-disaggregated serving, each run as its own process from one config.

Prefill computes every prompt's KV with the writer attached and publishes each request's full blocks
(commit records) once all layers are stored. A request whose save fails is reported (its error code
and key) and left uncommitted, and prefill goes on with the next prompt: decode recomputes what is
missing, so a full or failing store costs hits, not the run. Decode, in another process, hashes the
same prompts, asks the store how many leading blocks are committed, loads those into its own block
ids, recomputes only the tokens after them, and generates greedily. A miss — nothing committed, or a
load that fails its checks — is reported and falls back to recomputing the whole prompt; it never
fails the request.

Both roles build the reference model from the config's preset and seed (its weights come from a
seeded generator, so two processes get identical weights) and turn the same prompt arguments into
the same token ids. The reference model is not tensor-parallel: ``parallel.tp_rank``/``tp_size``
choose the key space (``tp<rank>of<size>``) a worker writes and reads, as a TP worker would, while
every worker stores the whole layer.

The two roles meet only through the store, so both refuse, before any work, a store whose data
lives and dies with one process (``memory://``, or a plug-in that declares itself in-process).
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from kvdump.cache_ops import write_cache_store
from kvdump.commit import lookup
from kvdump.config import ConfigError, PDConfig
from kvdump.errors import KvdumpError, KvdumpValueError, UnsupportedError
from kvdump.hashing import block_hashes
from kvdump.models import BlockAllocator, PagedKVCache, ReferenceLlama, blocks_needed, generate_greedy, greedy_continue
from kvdump.save_policy import run_in_cycle
from kvdump.stores import outlives_process
from kvdump.writer import AsyncWriter

Progress = Callable[[str], None]

# Tail tokens recomputed per decode call after a hit: each row attends over the whole prefix, so
# the gathered K/V grows with rows x prefix length; chunks keep that bounded for long prompts.
_TAIL_CHUNK = 64


class RequestError(KvdumpValueError):
    """The prompts asked for cannot run on the configured model (empty, or too long)."""


@dataclass(frozen=True)
class Request:
    """One prompt, named for reports; its token ids decide its block hashes."""

    name: str
    tokens: tuple[int, ...]


def text_to_tokens(text: str, vocab_size: int) -> list[int]:
    """A stand-in tokenizer for the reference model: each UTF-8 byte ``b`` becomes ``b % vocab_size``.
    Deterministic and process-independent, which is all PD needs from it."""
    return [b % vocab_size for b in text.encode("utf-8")]


def random_prompts(count: int, length: int, seed: int, vocab_size: int) -> list[list[int]]:
    """``count`` prompts of ``length`` uniform token ids from ``random.Random(seed)``."""
    rng = random.Random(seed)
    return [[rng.randrange(vocab_size) for _ in range(length)] for _ in range(count)]


def make_requests(
    texts: Sequence[str],
    random_count: int,
    random_length: int,
    seed: int,
    vocab_size: int,
) -> list[Request]:
    """The requests both roles run: the ``texts`` first, then the random prompts, named
    ``req-0``, ``req-1``, ... in that order. Raises :class:`RequestError` for an empty prompt."""
    prompts = [text_to_tokens(t, vocab_size) for t in texts]
    if random_count:
        if random_length < 1:
            raise RequestError(f"--prompt-len must be >= 1 for random prompts, got {random_length}")
        prompts += random_prompts(random_count, random_length, seed, vocab_size)
    for index, prompt in enumerate(prompts):
        if not prompt:
            raise RequestError(f"prompt {index} is empty; every prompt needs at least one token")
    return [Request(f"req-{i}", tuple(p)) for i, p in enumerate(prompts)]


def require_shared_store(config: PDConfig, role: str) -> None:
    """Raise :class:`ConfigError` on ``store.url`` unless the store's data outlives this process:
    what prefill stores in an in-process store vanishes when it exits, and decode, in a process of
    its own, can never find anything in one."""
    url = config.store.resolved_url
    try:
        shared = outlives_process(url)
    except (KvdumpValueError, UnsupportedError) as error:
        raise ConfigError(config.path, "store.url", str(error)) from error
    if shared:
        return
    consequence = (
        "what prefill stores there vanishes when it exits"
        if role == "prefill"
        else "decode can never find there what another process stored"
    )
    raise ConfigError(
        config.path,
        "store.url",
        f"expected a store that outlives this process, got {config.store.url!r}, whose data lives only "
        f"inside the process that opens it, so {consequence}; use file:///path or mooncake://host:port",
    )


def build_model(config: PDConfig) -> ReferenceLlama:
    """The reference model of ``[model]``: the same weights in every process with the same config."""
    return ReferenceLlama(config.model.llama_config())


def _check_fits(config: PDConfig, requests: Sequence[Request], new_tokens: int) -> None:
    if not requests:
        raise RequestError("no prompts: give --prompt TEXT and/or --random-prompts N")
    limit = config.model.llama_config().max_position
    for request in requests:
        if len(request.tokens) + new_tokens > limit:
            raise RequestError(
                f"{request.name}: {len(request.tokens)} prompt tokens + {new_tokens} new tokens exceed "
                f"the {limit} positions of model preset {config.model.preset!r}"
            )


def _layer_writer(
    writer: AsyncWriter, block_ids: torch.Tensor, hashes: torch.Tensor, request: str
) -> Callable[[int, torch.Tensor], None]:
    """The prefill's layer hook: queue the layer's blocks on the writer (returns at once)."""

    def dump(layer: int, kv: torch.Tensor) -> None:
        write_cache_store(writer, layer, kv, block_ids, hashes, request=request)

    return dump


def _model_summary(config: PDConfig, model: ReferenceLlama) -> dict[str, Any]:
    return {
        "preset": config.model.preset,
        "seed": config.model.seed,
        "dtype": config.model.dtype,
        "layers": model.config.num_layers,
        "kv_heads": model.config.num_kv_heads,
        "head_dim": model.config.head_dim,
        "block_size": config.cache.block_size,
    }


@dataclass
class PrefillRequestReport:
    name: str
    prompt_tokens: int
    full_blocks: int  # the prompt's full blocks, which prefill writes; a partial last block is not
    outcome: str  # "stored" (every full block committed) | "failed" (none committed)
    committed_blocks: int  # full_blocks when stored, 0 when failed
    records: int  # committed_blocks x layers
    kv_bytes: int  # payload bytes of those records (each also has a small header)
    forward_ms: float  # the forward plus its writer barrier and commit
    error_code: str | None = None  # when failed: the save's status code, e.g. "STORE_FULL"
    error_key: str | None = None  # when failed: the store key of the first failure, if any
    error: str | None = None  # when failed: the whole error message


@dataclass
class PrefillReport:
    role: str
    store: str
    namespace: str
    tp_rank: int
    tp_size: int
    model: dict[str, Any]
    requests: list[PrefillRequestReport] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """False only when some request failed and no request committed a block: nothing could be
        stored."""
        failed = any(r.outcome == "failed" for r in self.requests)
        return not failed or any(r.committed_blocks for r in self.requests)


def _where(config: PDConfig, store: object, model: ReferenceLlama) -> dict[str, Any]:
    """The report fields both roles share: which store, key space and model."""
    return {
        "store": store.name,  # type: ignore[attr-defined]
        "namespace": config.model.namespace,
        "tp_rank": config.parallel.tp_rank,
        "tp_size": config.parallel.tp_size,
        "model": _model_summary(config, model),
    }


def run_prefill(config: PDConfig, requests: Sequence[Request], progress: Progress = print) -> PrefillReport:
    """Prefill every request with the writer attached, one writer cycle per request, so each request
    is published (its full blocks committed) as soon as all its layers are stored. A request whose
    save fails is reported as ``failed`` with its error code, nothing of it is committed, and the
    next request runs (the writer's ``on_save_error="report"``)."""
    require_shared_store(config, "prefill")
    _check_fits(config, requests, 0)
    model = build_model(config)
    store = config.open_store()
    block_size = config.cache.block_size
    num_layers = model.config.num_layers
    cache = model.new_cache(max(blocks_needed(len(r.tokens), block_size) for r in requests), block_size)
    allocator = BlockAllocator(cache.num_blocks)
    report = PrefillReport(role="prefill", **_where(config, store, model))
    progress(
        f"prefill: {len(requests)} request(s), model {config.model.preset} ({num_layers} layers, "
        f"{config.model.dtype}), store {store.name}, namespace {config.model.namespace!r}, "
        f"tp{config.parallel.tp_rank}of{config.parallel.tp_size}"
    )
    started = time.perf_counter()
    writer = config.make_writer(store)
    try:
        for request in requests:
            tokens = list(request.tokens)
            full = len(tokens) // block_size
            table = allocator.allocate(blocks_needed(len(tokens), block_size))
            # Only full blocks are stored: a partial block's hash covers fewer tokens, so it could
            # never match the same prefix extended by a later request.
            chain = block_hashes(tokens[: full * block_size], block_size, config.hash_namespace)
            hashes = torch.tensor(chain, dtype=torch.int64)
            ids = torch.tensor(table[:full], dtype=torch.int64)
            dump = _layer_writer(writer, ids, hashes, request.name) if full else None
            begin = time.perf_counter()
            outcome = run_in_cycle(
                writer,
                functools.partial(model.prefill, [tokens], cache, [table], layer_hook=dump),
                timeout=config.timeouts.write_wait,
                on_save_error="report",
            )
            forward_ms = (time.perf_counter() - begin) * 1e3
            allocator.free(table)
            entry = _prefill_entry(request, full, num_layers, cache.bytes_per_block, forward_ms, outcome.save_error)
            report.requests.append(entry)
            progress(_prefill_line(entry))
        stats = writer.stats()
    finally:
        writer.close()
    seconds = time.perf_counter() - started
    kv_bytes = sum(r.kv_bytes for r in report.requests)
    report.totals = {
        "requests": len(report.requests),
        "stored_requests": sum(r.outcome == "stored" for r in report.requests),
        "failed_requests": sum(r.outcome == "failed" for r in report.requests),
        "blocks_written": sum(r.committed_blocks for r in report.requests),
        "records_written": sum(r.records for r in report.requests),
        "kv_bytes": kv_bytes,
        "seconds": round(seconds, 4),
        "barrier_p50_ms": round(stats["barrier_wait"]["p50_us"] / 1e3, 3),
        "failed_tasks": stats["failed"],
        "save_failures_reported": stats["save_failures_reported"],
    }
    return report


def _prefill_entry(
    request: Request,
    full_blocks: int,
    num_layers: int,
    bytes_per_block: int,
    forward_ms: float,
    save_error: KvdumpError | None,
) -> PrefillRequestReport:
    """One request's line of the report. A request is its own writer cycle, so a cycle's save
    error is this request's, and the writer committed none of its blocks."""
    committed = 0 if save_error is not None else full_blocks
    entry = PrefillRequestReport(
        name=request.name,
        prompt_tokens=len(request.tokens),
        full_blocks=full_blocks,
        outcome="stored" if save_error is None else "failed",
        committed_blocks=committed,
        records=committed * num_layers,
        kv_bytes=committed * num_layers * bytes_per_block,
        forward_ms=round(forward_ms, 3),
    )
    if save_error is not None:
        entry.error_code = save_error.code.name
        entry.error_key = save_error.key or None
        entry.error = str(save_error)
    return entry


def _prefill_line(entry: PrefillRequestReport) -> str:
    head = f"prefill {entry.name}: {entry.prompt_tokens} tokens, {entry.full_blocks} full block(s) -> "
    if entry.outcome == "failed":
        return (
            f"{head}FAILED {entry.error_code}{_key_note(entry)} in {entry.forward_ms:.1f} ms; "
            f"nothing of it committed, continuing"
        )
    return f"{head}{entry.records} records ({entry.kv_bytes / 2**10:.1f} KiB) in {entry.forward_ms:.1f} ms, committed"


def _key_note(entry: PrefillRequestReport) -> str:
    return f" (key {entry.error_key})" if entry.error_key else ""


@dataclass
class DecodeRequestReport:
    name: str
    prompt_tokens: int
    full_blocks: int  # full blocks in the prompt: what a complete prefill would have committed
    committed_blocks: int  # leading blocks the store has committed
    loaded_blocks: int  # blocks actually loaded: the committed ones, unless loading them failed
    recomputed_tokens: int
    hit: str  # "full" | "partial" | "miss" | "none" (prompt shorter than one block)
    load_error: str | None
    load_ms: float
    load_GBps: float | None
    generated: list[int]
    reference: list[int] | None = None  # with verify: the tokens of a from-scratch local run
    tokens_match: bool | None = None


@dataclass
class DecodeReport:
    role: str
    store: str
    namespace: str
    tp_rank: int
    tp_size: int
    model: dict[str, Any]
    max_new_tokens: int
    verified: bool
    requests: list[DecodeRequestReport] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """False only when verification ran and some request's tokens differ from the reference."""
        return all(r.tokens_match is not False for r in self.requests)


def _hit_kind(full_blocks: int, committed: int) -> str:
    if full_blocks == 0:
        return "none"
    if committed == full_blocks:
        return "full"
    return "partial" if committed else "miss"


def _prefill_after_prefix(
    model: ReferenceLlama, tokens: Sequence[int], start: int, cache: PagedKVCache, table: list[int]
) -> torch.Tensor:
    """Compute the KV of ``tokens[start:]`` on top of the prefix already in ``cache`` and return the
    last token's logits ``[1, vocab]``. Each tail token runs as one row of a decode batch that shares
    the request's block table: every row's K/V is written before any row attends, so row ``p``
    attends over positions ``0..p`` exactly as a prefill would."""
    logits = None
    for chunk_start in range(start, len(tokens), _TAIL_CHUNK):
        positions = list(range(chunk_start, min(chunk_start + _TAIL_CHUNK, len(tokens))))
        logits = model.decode([tokens[p] for p in positions], positions, cache, [table] * len(positions))
    assert logits is not None, "the caller keeps at least one token to recompute"
    return logits[-1:]


def run_decode(
    config: PDConfig,
    requests: Sequence[Request],
    max_new_tokens: int,
    *,
    verify: bool = False,
    progress: Progress = print,
) -> DecodeReport:
    """Decode every request from what the store has committed; see the module docstring. With
    ``verify``, each request is also run from scratch locally and the tokens compared."""
    require_shared_store(config, "decode")
    if max_new_tokens < 1:
        raise RequestError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    _check_fits(config, requests, max_new_tokens)
    model = build_model(config)
    store = config.open_store()
    block_size = config.cache.block_size
    num_layers = model.config.num_layers
    longest = max(len(r.tokens) for r in requests) + max_new_tokens
    num_blocks = blocks_needed(longest, block_size) + 1
    cache = model.new_cache(num_blocks, block_size)
    # Shuffled: the decode worker's block ids differ from the prefill worker's, as in a real cluster.
    allocator = BlockAllocator(num_blocks, shuffle_seed=config.model.seed + 1)
    reference_cache = model.new_cache(num_blocks, block_size) if verify else None
    key_space = f"namespace {config.model.namespace!r}, tp{config.parallel.tp_rank}of{config.parallel.tp_size}"
    report = DecodeReport(
        role="decode",
        **_where(config, store, model),
        max_new_tokens=max_new_tokens,
        verified=verify,
    )
    progress(
        f"decode: {len(requests)} request(s), model {config.model.preset} ({num_layers} layers, "
        f"{config.model.dtype}), store {store.name}, {key_space}"
    )
    loader = config.make_loader(store)
    started = time.perf_counter()
    try:
        for request in requests:
            tokens = list(request.tokens)
            full = len(tokens) // block_size
            hashes = block_hashes(tokens[: full * block_size], block_size, config.hash_namespace)
            committed = lookup(
                store,
                hashes,
                namespace=config.model.namespace,
                tp_rank=config.parallel.tp_rank,
                tp_size=config.parallel.tp_size,
                num_layers=num_layers,
            )
            loaded_blocks = committed  # all of them, unless loading fails
            table = allocator.allocate(blocks_needed(len(tokens), block_size))
            load_error: str | None = None
            load_s = 0.0
            if loaded_blocks:
                begin = time.perf_counter()
                try:
                    loader.start()
                    for layer in range(num_layers):
                        loader.load_async(layer, cache.layers[layer], table[:loaded_blocks], hashes[:loaded_blocks])
                    loader.finish(timeout=config.timeouts.load_wait)
                except KvdumpError as error:
                    # A committed block that fails its checks (or a store that stalls) costs this
                    # request its hit, not its answer: recompute from scratch. Loads still stuck in
                    # the store are abandoned at once; they never write into this cache afterwards.
                    loader.abort(timeout=0)
                    load_error = f"{type(error).__name__}: {error}"
                    loaded_blocks = 0
                load_s = time.perf_counter() - begin
            # The last prompt token is recomputed even when its block was loaded: its logits pick the
            # first new token, and logits are not stored. (Rewriting its K/V changes nothing.)
            start = min(loaded_blocks * block_size, len(tokens) - 1)
            if start:
                logits = _prefill_after_prefix(model, tokens, start, cache, table)
            else:
                logits = model.prefill([tokens], cache, [table])
            # greedy_continue extends `table` in place as the sequence grows; all of it is freed.
            generated = greedy_continue(model, logits, [tokens], cache, [table], max_new_tokens, allocator)[0]
            allocator.free(table)

            loaded_bytes = loaded_blocks * num_layers * cache.bytes_per_block
            entry = DecodeRequestReport(
                name=request.name,
                prompt_tokens=len(tokens),
                full_blocks=full,
                committed_blocks=committed,
                loaded_blocks=loaded_blocks,
                recomputed_tokens=len(tokens) - start,
                hit=_hit_kind(full, committed),
                load_error=load_error,
                load_ms=round(load_s * 1e3, 3),
                load_GBps=round(loaded_bytes / load_s / 1e9, 3) if loaded_blocks and load_s > 0 else None,
                generated=generated,
            )
            if reference_cache is not None:
                reference_alloc = BlockAllocator(num_blocks)
                reference = generate_greedy(model, [tokens], reference_cache, reference_alloc, max_new_tokens)
                entry.reference = reference[0]
                entry.tokens_match = entry.reference == generated
            report.requests.append(entry)
            progress(_decode_line(entry, store.name, key_space))
    finally:
        loader.close()
    seconds = time.perf_counter() - started
    with_loads = [r for r in report.requests if r.loaded_blocks]
    loaded_bytes = sum(r.loaded_blocks for r in with_loads) * num_layers * cache.bytes_per_block
    load_s = sum(r.load_ms for r in with_loads) / 1e3
    report.totals = {
        "requests": len(report.requests),
        "full_hits": sum(r.hit == "full" for r in report.requests),
        "partial_hits": sum(r.hit == "partial" for r in report.requests),
        "misses": sum(r.hit in ("miss", "none") for r in report.requests),
        "load_errors": sum(r.load_error is not None for r in report.requests),
        "loaded_blocks": sum(r.loaded_blocks for r in report.requests),
        "loaded_bytes": loaded_bytes,
        "load_GBps": round(loaded_bytes / load_s / 1e9, 3) if load_s > 0 else None,
        "recomputed_tokens": sum(r.recomputed_tokens for r in report.requests),
        "generated_tokens": sum(len(r.generated) for r in report.requests),
        "seconds": round(seconds, 4),
        "tokens_match": all(r.tokens_match for r in report.requests) if verify else None,
    }
    return report


def _decode_line(entry: DecodeRequestReport, store_name: str, key_space: str) -> str:
    head = f"decode {entry.name}: {entry.prompt_tokens} tokens, "
    if entry.hit == "none":
        what = "shorter than one block, nothing to look up; recomputed the prompt"
    elif entry.hit == "miss":
        what = (
            f"MISS: no committed blocks in {store_name} ({key_space}); "
            f"recomputed all {entry.recomputed_tokens} prompt tokens"
        )
    elif entry.load_error:
        what = (
            f"{entry.committed_blocks}/{entry.full_blocks} blocks committed but LOAD FAILED "
            f"({entry.load_error}); recomputed all {entry.recomputed_tokens} prompt tokens"
        )
    else:
        rate = "-" if entry.load_GBps is None else entry.load_GBps
        what = (
            f"{entry.hit} hit: {entry.committed_blocks}/{entry.full_blocks} blocks committed, "
            f"loaded {entry.loaded_blocks} in {entry.load_ms:.1f} ms ({rate} GB/s), "
            f"recomputed {entry.recomputed_tokens} tokens"
        )
    check = ""
    if entry.tokens_match is not None:
        check = "; verify: tokens match" if entry.tokens_match else "; verify: TOKENS DIFFER from the local recompute"
    return f"{head}{what}; generated {len(entry.generated)}{check}"


def format_prefill(report: PrefillReport) -> str:
    """The human-readable prefill report: totals, then one line per request with its outcome."""
    t = report.totals
    lines = [
        f"kvdump prefill -> {report.store} (namespace {report.namespace!r}, tp{report.tp_rank}of{report.tp_size})",
        f"  requests        {t['requests']}: {t['stored_requests']} stored, {t['failed_requests']} failed",
        (
            f"  blocks written  {t['blocks_written']} full blocks, {t['records_written']} records, "
            f"{t['kv_bytes'] / 2**20:.2f} MiB of KV"
        ),
        f"  time            {t['seconds']:.3f} s (barrier p50 {t['barrier_p50_ms']} ms)",
    ]
    for r in report.requests:
        if r.outcome == "failed":
            what = f"{r.error_code}{_key_note(r)}: nothing committed"
        else:
            what = f"{r.committed_blocks}/{r.full_blocks} blocks committed, {r.records} records"
        lines.append(f"  {r.name:<8} {r.outcome:<8} {what}")
    if not report.ok:
        lines.append("  nothing could be stored")
    return "\n".join(lines)


def format_decode(report: DecodeReport) -> str:
    """The human-readable decode report."""
    t = report.totals
    rate = "-" if t["load_GBps"] is None else t["load_GBps"]
    lines = [
        f"kvdump decode <- {report.store} (namespace {report.namespace!r}, tp{report.tp_rank}of{report.tp_size})",
        (
            f"  requests        {t['requests']}: {t['full_hits']} full hit(s), {t['partial_hits']} partial, "
            f"{t['misses']} miss(es), {t['load_errors']} load error(s)"
        ),
        f"  loaded          {t['loaded_blocks']} blocks, {t['loaded_bytes'] / 2**20:.2f} MiB, {rate} GB/s",
        (
            f"  recomputed      {t['recomputed_tokens']} prompt tokens; generated {t['generated_tokens']} tokens "
            f"in {t['seconds']:.3f} s"
        ),
    ]
    for r in report.requests:
        outcome = "load-err" if r.load_error else r.hit
        blocks = f"{r.loaded_blocks}/{r.full_blocks} blocks loaded"
        lines.append(f"  {r.name:<8} {outcome:<8} {blocks}  tokens {r.generated}")
    if report.verified:
        lines.append(f"  verify          {'tokens match the local recompute' if report.ok else 'TOKENS DIFFER'}")
    return "\n".join(lines)


def report_json(report: PrefillReport | DecodeReport) -> dict[str, Any]:
    """The report as plain JSON-ready data."""
    data = asdict(report)
    data["ok"] = report.ok
    return data

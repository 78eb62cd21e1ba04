"""The decode role: load each request's committed prefix, recompute the rest, and generate."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from kvdump.commit import lookup
from kvdump.config import PDConfig
from kvdump.errors import KvdumpError
from kvdump.hashing import block_hashes
from kvdump.models import BlockAllocator, PagedKVCache, ReferenceLlama, blocks_needed, generate_greedy, greedy_continue
from kvdump.pd import wiring
from kvdump.pd.report import DecodeReport, DecodeRequestReport, decode_line
from kvdump.pd.requests import Request, RequestError
from kvdump.pd.wiring import Progress, check_fits, require_shared_store, where_written

# Tail tokens recomputed per decode call after a hit: each row attends over the whole prefix, so
# the gathered K/V grows with rows x prefix length; chunks keep that bounded for long prompts.
_TAIL_CHUNK = 64


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
    check_fits(config, requests, max_new_tokens)
    model = wiring.build_model(config)
    store = wiring.open_store(config)
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
        **where_written(config, store, model),
        max_new_tokens=max_new_tokens,
        verified=verify,
    )
    progress(
        f"decode: {len(requests)} request(s), model {config.model.preset} ({num_layers} layers, "
        f"{config.model.dtype}), store {store.name}, {key_space}"
    )
    loader = wiring.make_loader(config, store)
    started = time.perf_counter()
    try:
        for request in requests:
            tokens = list(request.tokens)
            full = len(tokens) // block_size
            hashes = block_hashes(tokens[: full * block_size], block_size, wiring.hash_salt(config))
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
            progress(decode_line(entry, store.name, key_space))
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

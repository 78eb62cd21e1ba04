"""The decode role: load each request's committed prefix, recompute the rest, and generate."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from kvdump.config import PDConfig
from kvdump.models import BlockAllocator, blocks_needed, generate_greedy
from kvdump.pd import wiring
from kvdump.pd.decode_from_store import DecodedFromStore, decode_from_store
from kvdump.pd.report import DecodeReport, DecodeRequestReport, decode_line
from kvdump.pd.requests import Request, RequestError
from kvdump.pd.wiring import check_fits, require_shared_store, where_written
from kvdump.progress import steps

logger = logging.getLogger(__name__)


def _hit_kind(full_blocks: int, committed: int) -> str:
    if full_blocks == 0:
        return "none"
    if committed == full_blocks:
        return "full"
    return "partial" if committed else "miss"


def run_decode(
    config: PDConfig,
    requests: Sequence[Request],
    max_new_tokens: int,
    *,
    verify: bool = False,
) -> DecodeReport:
    """Decode every request from what the store has committed; see the package docstring. With
    ``verify``, each request is also run from scratch locally and the tokens compared. Each
    request's hit or miss is logged on this module's logger as it finishes (a failed load as a
    warning)."""
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
    logger.info(
        "decode: %d request(s), model %s (%d layers, %s), store %s, %s",
        len(requests),
        config.model.preset,
        num_layers,
        config.model.dtype,
        store.name,
        key_space,
    )
    loader = wiring.make_loader(config, store)
    started = time.perf_counter()
    try:
        for request in steps(requests, "decode requests"):
            decoded = decode_from_store(
                model,
                loader,
                request.tokens,
                cache,
                allocator,
                max_new_tokens,
                salt=wiring.hash_salt(config),
                load_timeout=config.timeouts.load_wait,
            )
            entry = _decode_entry(request, decoded, num_layers * cache.bytes_per_block)
            if reference_cache is not None:
                reference_alloc = BlockAllocator(num_blocks)
                reference = generate_greedy(
                    model, [list(request.tokens)], reference_cache, reference_alloc, max_new_tokens
                )
                entry.reference = reference[0]
                entry.tokens_match = entry.reference == entry.generated
            report.requests.append(entry)
            level = logging.WARNING if entry.load_error or entry.tokens_match is False else logging.INFO
            logger.log(level, "%s", decode_line(entry, store.name, key_space))
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


def _decode_entry(request: Request, decoded: DecodedFromStore, bytes_per_block_all_layers: int) -> DecodeRequestReport:
    loaded_bytes = decoded.loaded_blocks * bytes_per_block_all_layers
    seconds = decoded.load_seconds
    return DecodeRequestReport(
        name=request.name,
        prompt_tokens=len(request.tokens),
        full_blocks=decoded.full_blocks,
        committed_blocks=decoded.committed_blocks,
        loaded_blocks=decoded.loaded_blocks,
        recomputed_tokens=decoded.recomputed_tokens,
        hit=_hit_kind(decoded.full_blocks, decoded.committed_blocks),
        load_error=decoded.load_error,
        load_ms=round(seconds * 1e3, 3),
        load_GBps=round(loaded_bytes / seconds / 1e9, 3) if decoded.loaded_blocks and seconds > 0 else None,
        generated=decoded.generated,
    )

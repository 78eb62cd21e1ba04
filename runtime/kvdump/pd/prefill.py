"""The prefill role: compute every prompt's KV with the writer attached and commit each request's blocks."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from kvdump.config import PDConfig
from kvdump.errors import KvdumpError
from kvdump.models import BlockAllocator, blocks_needed
from kvdump.pd import wiring
from kvdump.pd.prefill_into_store import prefill_into_store
from kvdump.pd.report import PrefillReport, PrefillRequestReport, prefill_line
from kvdump.pd.requests import Request
from kvdump.pd.wiring import check_fits, require_shared_store, where_written
from kvdump.progress import steps

logger = logging.getLogger(__name__)


def run_prefill(config: PDConfig, requests: Sequence[Request]) -> PrefillReport:
    """Prefill every request with the writer attached, one writer cycle per request, so each request
    is published (its full blocks committed) as soon as all its layers are stored. A request whose
    save fails is reported as ``failed`` with its error code, nothing of it is committed, and the
    next request runs (the writer's ``on_save_error="report"``). Each request's outcome is logged on
    this module's logger as it finishes (a failed one as a warning)."""
    require_shared_store(config, "prefill")
    check_fits(config, requests, 0)
    model = wiring.build_model(config)
    store = wiring.open_store(config)
    block_size = config.cache.block_size
    num_layers = model.config.num_layers
    cache = model.new_cache(max(blocks_needed(len(r.tokens), block_size) for r in requests), block_size)
    allocator = BlockAllocator(cache.num_blocks)
    report = PrefillReport(role="prefill", **where_written(config, store, model))
    logger.info(
        "prefill: %d request(s), model %s (%d layers, %s), store %s, namespace %r, tp%dof%d",
        len(requests),
        config.model.preset,
        num_layers,
        config.model.dtype,
        store.name,
        config.model.namespace,
        config.parallel.tp_rank,
        config.parallel.tp_size,
    )
    started = time.perf_counter()
    writer = wiring.make_writer(config, store)
    try:
        for request in steps(requests, "prefill requests"):
            tokens = list(request.tokens)
            table = allocator.allocate(blocks_needed(len(tokens), block_size))
            begin = time.perf_counter()
            stored = prefill_into_store(
                model,
                writer,
                [tokens],
                cache,
                [table],
                salt=wiring.hash_salt(config),
                request=request.name,
                timeout=config.timeouts.write_wait,
                on_save_error="report",
            )
            forward_ms = (time.perf_counter() - begin) * 1e3
            allocator.free(table)
            full = len(stored.chains[0])
            entry = _prefill_entry(request, full, num_layers, cache.bytes_per_block, forward_ms, stored.save_error)
            report.requests.append(entry)
            logger.log(logging.WARNING if entry.outcome == "failed" else logging.INFO, "%s", prefill_line(entry))
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

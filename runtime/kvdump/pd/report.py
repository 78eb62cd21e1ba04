"""The roles' reports: one entry per request, the text a person reads, and the JSON a tool reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
class RoleReport:
    """Where a role ran: the part of the report both roles share."""

    role: str
    store: str
    namespace: str
    tp_rank: int
    tp_size: int
    model: dict[str, Any]


@dataclass
class PrefillReport(RoleReport):
    requests: list[PrefillRequestReport] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """False only when some request failed and no request committed a block: nothing could be
        stored."""
        failed = any(r.outcome == "failed" for r in self.requests)
        return not failed or any(r.committed_blocks for r in self.requests)


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
class DecodeReport(RoleReport):
    max_new_tokens: int
    verified: bool
    requests: list[DecodeRequestReport] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """False only when verification ran and some request's tokens differ from the reference."""
        return all(r.tokens_match is not False for r in self.requests)


def prefill_line(entry: PrefillRequestReport) -> str:
    head = f"prefill {entry.name}: {entry.prompt_tokens} tokens, {entry.full_blocks} full block(s) -> "
    if entry.outcome == "failed":
        return (
            f"{head}FAILED {entry.error_code}{_key_note(entry)} in {entry.forward_ms:.1f} ms; "
            f"nothing of it committed, continuing"
        )
    return f"{head}{entry.records} records ({entry.kv_bytes / 2**10:.1f} KiB) in {entry.forward_ms:.1f} ms, committed"


def _key_note(entry: PrefillRequestReport) -> str:
    return f" (key {entry.error_key})" if entry.error_key else ""


def decode_line(entry: DecodeRequestReport, store_name: str, key_space: str) -> str:
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

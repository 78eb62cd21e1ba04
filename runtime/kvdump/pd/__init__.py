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

from kvdump.pd.decode import run_decode
from kvdump.pd.decode_from_store import DecodedFromStore, decode_from_store
from kvdump.pd.prefill import run_prefill
from kvdump.pd.prefill_into_store import PromptBlocks, StoredPrefill, prefill_into_store, prompt_blocks
from kvdump.pd.report import (
    DecodeReport,
    DecodeRequestReport,
    PrefillReport,
    PrefillRequestReport,
    format_decode,
    format_prefill,
    report_json,
)
from kvdump.pd.requests import Request, RequestError, make_requests, random_prompts, text_to_tokens
from kvdump.pd.wiring import build_model, require_shared_store

__all__ = [
    "DecodeReport",
    "DecodeRequestReport",
    "DecodedFromStore",
    "PrefillReport",
    "PrefillRequestReport",
    "PromptBlocks",
    "Request",
    "RequestError",
    "StoredPrefill",
    "build_model",
    "decode_from_store",
    "format_decode",
    "format_prefill",
    "make_requests",
    "prefill_into_store",
    "prompt_blocks",
    "random_prompts",
    "report_json",
    "require_shared_store",
    "run_decode",
    "run_prefill",
    "text_to_tokens",
]

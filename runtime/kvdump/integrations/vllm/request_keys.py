"""Which blocks of a vLLM request kvdump can store and find, and under which keys.

Keys come from kvdump's content hash chain over the prompt's token ids (:mod:`kvdump.hashing`):
stable across processes, hosts and TP ranks, unlike Python's ``hash()``. Everything else the KV of a
block depends on is folded into the chain's hash namespace: the model namespace and dtype, the LoRA
adapter, and the request's cache salt, so that tenants who salt their prompts never share blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kvdump.hashing import block_hashes


def hash_namespace(namespace: str, dtype: str, lora_name: str | None, cache_salt: str | None) -> str:
    """What a request's chain is salted with. Length prefixes keep the parts unambiguous."""
    parts = [namespace, dtype, lora_name or "", cache_salt or ""]
    return "|".join(f"{len(p)}:{p}" for p in parts)


def unsupported_reason(request: Any) -> str | None:
    """Why the KV of ``request`` cannot be keyed by its token ids alone, or None when it can: inputs
    embedded by the caller or multimodal features change the KV without changing the token ids."""
    if getattr(request, "prompt_embeds", None) is not None:
        return "prompt embeddings"
    if getattr(request, "mm_features", None):
        return "multimodal inputs"
    if not getattr(request, "prompt_token_ids", None):
        return "no prompt token ids"
    return None


def prompt_chain(prompt_token_ids: Sequence[int], block_size: int, chain_namespace: str) -> list[int]:
    """The hashes of the prompt's full blocks (a partly filled last block is never stored)."""
    full = len(prompt_token_ids) // block_size * block_size
    return block_hashes(list(prompt_token_ids[:full]), block_size, chain_namespace)


def request_chain_namespace(request: Any, namespace: str, dtype: str) -> str:
    """The chain namespace of a vLLM ``Request``."""
    lora = getattr(request, "lora_request", None)
    return hash_namespace(namespace, dtype, getattr(lora, "lora_name", None), getattr(request, "cache_salt", None))

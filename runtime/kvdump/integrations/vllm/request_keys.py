"""Which blocks of a vLLM request kvdump can store and find, and under which keys.

Keys come from kvdump's content hash chain over the prompt's token ids (:mod:`kvdump.hashing`):
stable across processes, hosts and TP ranks, unlike Python's ``hash()``. Everything else the KV of a
block depends on salts the chain (:func:`kvdump.hashing.model_salt`): the checkpoint and the cache's
dtype, the LoRA adapter, and the request's cache salt, so that tenants who salt their prompts never
share blocks. The salt is the one kvdump's transformers integration gives the same checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvdump.hashing import model_salt

if TYPE_CHECKING:
    import torch


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


def request_salt(request: Any, model: str, kv_dtype: torch.dtype | str) -> str:
    """The chain salt of a vLLM ``Request`` of checkpoint ``model`` with a cache of ``kv_dtype``."""
    lora = getattr(request, "lora_request", None)
    return model_salt(
        model, kv_dtype, adapter=getattr(lora, "lora_name", None), cache_salt=getattr(request, "cache_salt", None)
    )


def cache_element_type(model_dtype: torch.dtype, cache_dtype: str) -> torch.dtype | str:
    """The type a vLLM KV cache holds, as the salt names it: the model's dtype (what the transformers
    integration salts with), or for an FP8 cache vLLM's own name for it (``fp8``, ``fp8_e4m3``,
    ...), which only vLLM produces."""
    return model_dtype if cache_dtype == "auto" else cache_dtype

"""One prefill forward with the writer attached: the work the prefill role does per request and the
demo does per timed round, on objects the caller built (no config)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from kvdump.cache_ops import write_cache_store
from kvdump.errors import KvdumpError
from kvdump.hashing import flatten_blocks, full_block_hashes
from kvdump.models import PagedKVCache, ReferenceLlama
from kvdump.save_policy import run_in_cycle
from kvdump.writer import AsyncWriter

# write_cache_store's signature: (writer, layer, kv, block_ids, block_hashes, *, request).
LayerWrite = Callable[..., None]


@dataclass(frozen=True)
class PromptBlocks:
    """What a prefill of a batch stores: each prompt's full-block hash chain, and the block ids and
    hashes ``write_cache_store`` takes (a block two prompts share listed once)."""

    chains: list[list[int]]
    block_ids: torch.Tensor
    hashes: torch.Tensor


@dataclass(frozen=True)
class StoredPrefill:
    """The forward's last-position logits ``[batch, vocab]``, the hash chains its blocks were
    written under, and the save error ``on_save_error="report"`` kept (None when the save
    succeeded; then every chain is committed)."""

    logits: torch.Tensor
    chains: list[list[int]]
    save_error: KvdumpError | None


def prompt_blocks(
    prompts: Sequence[Sequence[int]], block_tables: Sequence[Sequence[int]], block_size: int, salt: str
) -> PromptBlocks:
    chains = [full_block_hashes(list(prompt), block_size, salt) for prompt in prompts]
    block_ids, hashes = flatten_blocks(chains, block_tables)
    return PromptBlocks(chains, block_ids, hashes)


def prefill_into_store(
    model: ReferenceLlama,
    writer: AsyncWriter,
    prompts: Sequence[Sequence[int]],
    cache: PagedKVCache,
    block_tables: Sequence[Sequence[int]],
    *,
    salt: str,
    request: str = "",
    timeout: float | None = None,
    on_save_error: str = "raise",
    write_layer: LayerWrite = write_cache_store,
) -> StoredPrefill:
    """Prefill ``prompts`` into ``cache`` at ``block_tables`` in one writer cycle, queueing every
    layer's full blocks on ``writer`` as the layer finishes (keys salted with ``salt``, see
    :func:`kvdump.hashing.model_salt`), so the blocks are committed once all layers are stored.
    ``write_layer`` stands in for :func:`kvdump.write_cache_store`, e.g. to time the call."""
    blocks = prompt_blocks(prompts, block_tables, cache.block_size, salt)

    def write(layer: int, kv: torch.Tensor) -> None:
        write_layer(writer, layer, kv, blocks.block_ids, blocks.hashes, request=request)

    hook = write if blocks.block_ids.numel() else None
    outcome = run_in_cycle(
        writer,
        functools.partial(model.prefill, prompts, cache, block_tables, layer_hook=hook),
        timeout=timeout,
        on_save_error=on_save_error,
    )
    return StoredPrefill(outcome.result, blocks.chains, outcome.save_error)

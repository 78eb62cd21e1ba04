"""The layer hook that dumps a batch of prompts' KV: what a forward with a per-layer hook (the
reference model's ``prefill(..., layer_hook=...)``) passes to store every layer as it finishes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from kvdump.cache_ops import write_cache_store
from kvdump.hashing import block_hashes, flatten_blocks
from kvdump.writer import AsyncWriter

LayerHook = Callable[[int, torch.Tensor], None]


def prompt_dump_hook(
    writer: AsyncWriter,
    input_ids: Sequence[Sequence[int]],
    block_tables: Sequence[Sequence[int]],
    block_size: int,
    *,
    salt: str = "",
    request: str = "",
) -> LayerHook:
    """``hook(layer, kv)`` calling :func:`kvdump.write_cache_store` for the blocks of every prompt
    (keys from their hash chains salted with ``salt``, see :func:`kvdump.hashing.model_salt`; a
    block two prompts share taken once). The ids and hashes are
    built here, once per forward, so the per-layer call passes only tensor references."""
    chains = [block_hashes(list(prompt), block_size, salt) for prompt in input_ids]
    ids, hashes = flatten_blocks(chains, block_tables)

    def dump(layer: int, kv: torch.Tensor) -> None:
        write_cache_store(writer, layer, kv, ids, hashes, request=request)

    return dump

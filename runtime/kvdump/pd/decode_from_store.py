"""One request decoded from what the store has committed: the work the decode role and the demo do
per request, on objects the caller built (no config). Look up the committed prefix, load it into
this cache's own block ids, recompute only the tokens after it, and continue greedily. A miss, or a
load that fails its checks, falls back to recomputing the whole prompt; it never fails the request."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kvdump.commit import lookup
from kvdump.errors import KvdumpError
from kvdump.hashing import full_block_hashes
from kvdump.loader import KVLoader
from kvdump.models import BlockAllocator, PagedKVCache, ReferenceLlama, blocks_needed, greedy_continue

# Tail tokens recomputed per decode call after a hit: each row attends over the whole prefix, so
# the gathered K/V grows with rows x prefix length; chunks keep that bounded for long prompts.
_TAIL_CHUNK = 64


@dataclass(frozen=True)
class DecodedFromStore:
    full_blocks: int  # full blocks in the prompt: what a complete prefill would have committed
    committed_blocks: int  # leading blocks the store has committed
    loaded_blocks: int  # the committed ones, unless loading them failed
    recomputed_tokens: int
    load_error: str | None
    load_seconds: float
    generated: list[int]


def decode_from_store(
    model: ReferenceLlama,
    loader: KVLoader,
    tokens: Sequence[int],
    cache: PagedKVCache,
    allocator: BlockAllocator,
    max_new_tokens: int,
    *,
    salt: str,
    load_timeout: float | None = None,
) -> DecodedFromStore:
    """Decode ``tokens`` with ``max_new_tokens`` greedy tokens, loading the committed prefix of
    their hash chain (salted with ``salt``) from ``loader``'s store and key space. The blocks taken
    from ``allocator`` are freed before returning."""
    tokens = list(tokens)
    block_size = cache.block_size
    num_layers = model.config.num_layers
    hashes = full_block_hashes(tokens, block_size, salt)
    committed = lookup(loader.store, hashes, key_space=loader.key_space, num_layers=num_layers)
    loaded_blocks = committed  # all of them, unless loading fails
    table = allocator.allocate(blocks_needed(len(tokens), block_size))
    load_error: str | None = None
    load_seconds = 0.0
    if loaded_blocks:
        begin = time.perf_counter()
        try:
            loader.start()
            for layer in range(num_layers):
                loader.load_async(layer, cache.layers[layer], table[:loaded_blocks], hashes[:loaded_blocks])
            loader.finish(timeout=load_timeout)
        except KvdumpError as error:
            # A committed block that fails its checks (or a store that stalls) costs this request
            # its hit, not its answer: recompute from scratch. Loads still stuck in the store are
            # abandoned at once; they never write into this cache afterwards.
            loader.abort(timeout=0)
            load_error = f"{type(error).__name__}: {error}"
            loaded_blocks = 0
        load_seconds = time.perf_counter() - begin
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
    return DecodedFromStore(
        full_blocks=len(hashes),
        committed_blocks=committed,
        loaded_blocks=loaded_blocks,
        recomputed_tokens=len(tokens) - start,
        load_error=load_error,
        load_seconds=load_seconds,
        generated=generated,
    )


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

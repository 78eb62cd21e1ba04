"""A server's day in miniature: many forwards through wrap_model write twenty times the capacity of
an evicting MemoryStore, with new and repeated prompts mixed. No forward fails or loses its output,
the store evicts, every lookup hit loads bit-identical, and the process's memory stays flat."""

from __future__ import annotations

import random

import pytest
import torch

import kvdump
from kvdump.hashing import block_hashes
from kvdump.models import BlockAllocator, LlamaConfig, ReferenceLlama
from kvdump.prompt_dump import prompt_dump_hook

BLOCK = 16
LAYERS = 2
PROMPT_TOKENS = 4 * BLOCK  # four full blocks per prompt
PROMPTS_PER_FORWARD = 4
CAPACITY = 4 << 20
RSS_SAMPLES = 8


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def config() -> LlamaConfig:
    # 32 KiB per block record: big enough that a per-put allocation would show in RSS.
    return LlamaConfig.tiny(num_layers=LAYERS, num_heads=4, num_kv_heads=4, head_dim=64, hidden_size=256)


class Prompt:
    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens
        self.hashes = block_hashes(tokens, BLOCK)
        self.blocks: list[torch.Tensor] | None = None  # per layer, [2, blocks, ...] as first prefilled


@pytest.mark.timeout(600)
def test_twenty_capacities_through_wrap_model_without_a_failed_or_lost_forward() -> None:
    rng = random.Random(11)
    model = ReferenceLlama(config())
    reference = ReferenceLlama(config())  # the same weights (seeded), never wrapped
    store = kvdump.MemoryStore(capacity_bytes=CAPACITY)
    writer = kvdump.AsyncWriter(store, num_threads=2)
    kvdump.wrap_model(model, writer, method="prefill", timeout=60, on_save_error="report")
    record = 2 * BLOCK * 4 * 64 * 4 + 64
    per_forward = PROMPTS_PER_FORWARD * (PROMPT_TOKENS // BLOCK) * LAYERS * record
    forwards = -(-20 * CAPACITY // per_forward)
    pool: list[Prompt] = []
    hits = loaded_blocks = 0
    rss: list[int] = []
    try:
        for forward in range(forwards):
            # Half new prompts, half repeats of recent ones (which may or may not have been evicted).
            batch = [Prompt([rng.randrange(128) for _ in range(PROMPT_TOKENS)]) for _ in range(2)]
            recent = [p for p in pool[-12:] if p not in batch]
            batch += rng.sample(recent, min(2, len(recent)))
            for prompt in batch:
                found = kvdump.lookup(store, prompt.hashes, num_layers=LAYERS)
                if found == 0:
                    continue
                hits += 1
                assert prompt.blocks is not None, "a prompt never written was found"
                cache = model.new_cache(found, BLOCK)
                for layer in range(LAYERS):
                    kvdump.load_cache_store(
                        store, layer, cache.layers[layer], list(range(found)), prompt.hashes[:found]
                    )
                    assert torch.equal(cache.layers[layer], prompt.blocks[layer][:, :found]), (forward, layer)
                loaded_blocks += found

            allocator = BlockAllocator(PROMPTS_PER_FORWARD * 4)
            tables = [allocator.allocate(len(p.hashes)) for p in batch]
            tokens = [p.tokens for p in batch]
            cache = model.new_cache(PROMPTS_PER_FORWARD * 4, BLOCK)
            logits = model.prefill(tokens, cache, tables, layer_hook=prompt_dump_hook(writer, tokens, tables, BLOCK))
            expected = reference.prefill(tokens, reference.new_cache(PROMPTS_PER_FORWARD * 4, BLOCK), tables)
            assert logits is not None and torch.equal(logits, expected), f"forward {forward} lost its output"
            for prompt, table in zip(batch, tables):
                if prompt.blocks is None:
                    prompt.blocks = [cache.layers[layer][:, table].clone() for layer in range(LAYERS)]
                    pool.append(prompt)
            del pool[:-12]  # the test keeps only what it may repeat, so its own memory stays flat too
            if forward >= forwards // 4 and (forward - forwards // 4) % max(1, (forwards * 3 // 4) // RSS_SAMPLES) == 0:
                rss.append(rss_bytes())
        stats = writer.stats()
        store_stats = store.stats()
    finally:
        writer.close()

    assert stats["save_failures_reported"] == 0 and stats["failed"] == 0
    assert stats["cycles"] == forwards
    assert store_stats["evictions"] > 0
    assert store_stats["used_bytes"] <= CAPACITY
    assert hits > 0 and loaded_blocks > 0
    assert len(rss) >= 5
    # Twenty capacities went through the store; its own memory was allocated once. What remains is
    # Python's and torch's churn, far below what one capacity of per-put allocations would add.
    assert max(rss) - min(rss) < CAPACITY, [r >> 20 for r in rss]
    print(
        f"{forwards} forwards, {store_stats['evictions']} evictions, {hits} lookup hits "
        f"({loaded_blocks} blocks loaded), RSS samples MiB {[r >> 20 for r in rss]}"
    )

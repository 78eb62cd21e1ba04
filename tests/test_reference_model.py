"""The reference paged Llama and the block hash chain: the ground truth the kvdump tests build on."""

from __future__ import annotations

import pytest
import torch

from kvdump.hashing import block_hash, block_hashes
from kvdump.models import (
    BlockAllocator,
    LlamaConfig,
    PagedKVCache,
    ReferenceLlama,
    blocks_needed,
    copy_blocks,
    greedy_continue,
)

BLOCK_SIZE = 4
NUM_BLOCKS = 64
# Lengths chosen to end mid-block, exactly on a block boundary, and inside the first block.
PROMPTS = [
    [3, 17, 42, 8, 99, 5, 61],
    [11, 12, 13, 14, 15, 16, 17, 18],
    [7],
    [100, 2, 2, 2, 9, 120, 33, 1, 64, 77, 5],
]


@pytest.fixture(scope="module")
def model() -> ReferenceLlama:
    return ReferenceLlama(LlamaConfig.tiny(num_layers=3, seed=1234))


def allocate_tables(allocator: BlockAllocator, prompts: list[list[int]], extra_tokens: int = 0) -> list[list[int]]:
    """Block tables for the prompts, with room for ``extra_tokens`` decoded tokens each."""
    return [allocator.allocate(blocks_needed(len(p) + extra_tokens, BLOCK_SIZE)) for p in prompts]


def full_last_logits(model: ReferenceLlama, sequence: list[int]) -> torch.Tensor:
    return model.forward_full([sequence])[0, -1]


# --- paged prefill/decode against a full recompute -------------------------------------------------


def test_prefill_last_logits_match_full_recompute(model: ReferenceLlama) -> None:
    cache = model.new_cache(NUM_BLOCKS, BLOCK_SIZE)
    # Scattered, non-contiguous block ids, so a wrong slot mapping cannot pass by luck.
    tables = allocate_tables(BlockAllocator(NUM_BLOCKS, shuffle_seed=3), PROMPTS)

    logits = model.prefill(PROMPTS, cache, tables)

    expected = torch.stack([full_last_logits(model, p) for p in PROMPTS])
    assert logits.shape == (len(PROMPTS), model.config.vocab_size)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_decode_logits_match_full_recompute_across_block_boundaries(model: ReferenceLlama) -> None:
    cache = model.new_cache(NUM_BLOCKS, BLOCK_SIZE)
    allocator = BlockAllocator(NUM_BLOCKS, shuffle_seed=5)
    tables = allocate_tables(allocator, PROMPTS)
    model.prefill(PROMPTS, cache, tables)
    sequences = [list(p) for p in PROMPTS]

    # Teacher-forced tokens rather than argmax ones, so every step feeds a different token.
    for step in range(6):
        tokens = [(31 * step + 7 * s + 1) % model.config.vocab_size for s in range(len(PROMPTS))]
        seq_lens = [len(seq) for seq in sequences]
        for table, n in zip(tables, seq_lens):
            table.extend(allocator.allocate(blocks_needed(n + 1, BLOCK_SIZE) - len(table)))

        logits = model.decode(tokens, seq_lens, cache, tables)

        for seq, token in zip(sequences, tokens):
            seq.append(token)
        expected = torch.stack([full_last_logits(model, seq) for seq in sequences])
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4, msg=f"decode step {step}")


def test_greedy_continue_matches_naive_greedy_recompute(model: ReferenceLlama) -> None:
    cache = model.new_cache(NUM_BLOCKS, BLOCK_SIZE)
    allocator = BlockAllocator(NUM_BLOCKS, offset=9)
    tables = allocate_tables(allocator, PROMPTS)
    first_logits = model.prefill(PROMPTS, cache, tables)
    max_new_tokens = 7

    generated = greedy_continue(model, first_logits, PROMPTS, cache, tables, max_new_tokens, allocator)

    for prompt, tokens, table in zip(PROMPTS, generated, tables):
        sequence = list(prompt)
        for _ in range(max_new_tokens):
            sequence.append(int(full_last_logits(model, sequence).argmax()))
        assert tokens == sequence[len(prompt) :]
        # Every token whose KV was written (all but the last generated one) has a block.
        assert len(table) == blocks_needed(len(prompt) + max_new_tokens - 1, BLOCK_SIZE)


def test_bfloat16_paged_path_tracks_full_recompute() -> None:
    model = ReferenceLlama(LlamaConfig.tiny(dtype=torch.bfloat16, seed=7))
    cache = model.new_cache(NUM_BLOCKS, BLOCK_SIZE)
    assert cache.layers[0].dtype == torch.bfloat16
    tables = allocate_tables(BlockAllocator(NUM_BLOCKS, shuffle_seed=1), PROMPTS, extra_tokens=1)

    logits = model.prefill(PROMPTS, cache, tables)
    decoded = model.decode([5] * len(PROMPTS), [len(p) for p in PROMPTS], cache, tables)

    expected_prefill = torch.stack([full_last_logits(model, p) for p in PROMPTS])
    expected_decode = torch.stack([full_last_logits(model, p + [5]) for p in PROMPTS])
    # bf16 keeps about 3 significant digits; a real bug (wrong slot, position or head) is O(1).
    torch.testing.assert_close(logits.float(), expected_prefill.float(), atol=0.1, rtol=0.05)
    torch.testing.assert_close(decoded.float(), expected_decode.float(), atol=0.1, rtol=0.05)


def test_same_seed_gives_same_weights_and_other_seed_does_not() -> None:
    first = ReferenceLlama(LlamaConfig.tiny(seed=11)).state_dict()
    again = ReferenceLlama(LlamaConfig.tiny(seed=11)).state_dict()
    other = ReferenceLlama(LlamaConfig.tiny(seed=12)).state_dict()

    assert first.keys() == again.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not any(torch.equal(first[name], other[name]) for name in first if name.endswith("proj.weight"))


# --- decode from a second cache with other block ids (the PD transfer) ----------------------------


def test_decode_from_copied_blocks_under_other_ids_gives_same_tokens(model: ReferenceLlama) -> None:
    max_new_tokens = 6
    prefill_cache = model.new_cache(NUM_BLOCKS, BLOCK_SIZE)
    prefill_allocator = BlockAllocator(NUM_BLOCKS)
    prefill_tables = allocate_tables(prefill_allocator, PROMPTS)
    first_logits = model.prefill(PROMPTS, prefill_cache, prefill_tables)

    decode_cache = model.new_cache(NUM_BLOCKS, BLOCK_SIZE)
    decode_allocator = BlockAllocator(NUM_BLOCKS, offset=17, shuffle_seed=99)
    decode_tables = allocate_tables(decode_allocator, PROMPTS)
    assert all(p != d for p, d in zip(prefill_tables, decode_tables))
    for src_ids, dst_ids in zip(prefill_tables, decode_tables):
        copy_blocks(prefill_cache, decode_cache, src_ids, dst_ids)

    # The decode side must not even need the prefill cache any more.
    expected = greedy_continue(
        model, first_logits, PROMPTS, prefill_cache, prefill_tables, max_new_tokens, prefill_allocator
    )
    del prefill_cache
    generated = greedy_continue(
        model, first_logits, PROMPTS, decode_cache, decode_tables, max_new_tokens, decode_allocator
    )
    assert generated == expected


def test_decode_without_transferred_blocks_diverges(model: ReferenceLlama) -> None:
    """Control for the transfer test: decoding over an empty cache must not give the same logits."""
    prefill_cache = model.new_cache(NUM_BLOCKS, BLOCK_SIZE)
    tables = allocate_tables(BlockAllocator(NUM_BLOCKS), PROMPTS, extra_tokens=1)
    model.prefill(PROMPTS, prefill_cache, tables)
    empty_cache = model.new_cache(NUM_BLOCKS, BLOCK_SIZE)
    tokens, seq_lens = [1] * len(PROMPTS), [len(p) for p in PROMPTS]

    with_kv = model.decode(tokens, seq_lens, prefill_cache, tables)
    without_kv = model.decode(tokens, seq_lens, empty_cache, tables)

    # The one-token prompt has no earlier KV, so only the longer prompts are expected to differ.
    longer = [s for s, p in enumerate(PROMPTS) if len(p) > 1]
    assert (with_kv[longer] - without_kv[longer]).abs().amax(dim=-1).min() > 1e-2


# --- layer hook -----------------------------------------------------------------------------------


def test_layer_hook_runs_once_per_layer_in_order_after_that_layers_kv_is_written(
    model: ReferenceLlama,
) -> None:
    cache = model.new_cache(NUM_BLOCKS, BLOCK_SIZE)
    tables = allocate_tables(BlockAllocator(NUM_BLOCKS, shuffle_seed=2), PROMPTS)
    calls: list[int] = []
    passed_tensors: list[torch.Tensor] = []
    snapshots: list[list[torch.Tensor]] = []

    def hook(layer: int, kv: torch.Tensor) -> None:
        calls.append(layer)
        passed_tensors.append(kv)
        snapshots.append([t.clone() for t in cache.layers])

    model.prefill(PROMPTS, cache, tables, layer_hook=hook)

    num_layers = model.config.num_layers
    assert calls == list(range(num_layers))
    assert all(kv is cache.layers[i] for i, kv in enumerate(passed_tensors))
    used_blocks = [b for table in tables for b in table]
    for i, snapshot in enumerate(snapshots):
        # This layer already holds its final K/V for every sequence ...
        assert torch.equal(snapshot[i], cache.layers[i])
        assert bool((snapshot[i][:, used_blocks, 0] != 0).any(dim=(-2, -1)).all())
        # ... and the next layer has not been touched yet.
        if i + 1 < num_layers:
            assert not snapshot[i + 1].any()


def test_layer_hook_runs_before_that_layers_mlp(model: ReferenceLlama) -> None:
    """The hook sees a layer's KV as soon as its attention wrote it, so a dump of the last layer
    overlaps that layer's MLP and the logits, as it does under vLLM and transformers."""
    events: list[tuple[str, int]] = []
    handles = [
        layer.mlp.register_forward_hook(lambda *_, i=i: events.append(("mlp", i)))
        for i, layer in enumerate(model.layers)
    ]
    try:
        hook = lambda layer, kv: events.append(("hook", layer))  # noqa: E731
        cache = model.new_cache(NUM_BLOCKS, BLOCK_SIZE)
        model.prefill(PROMPTS, cache, allocate_tables(BlockAllocator(NUM_BLOCKS), PROMPTS), layer_hook=hook)
        prefill_events = list(events)
        events.clear()
        cache = model.new_cache(NUM_BLOCKS, BLOCK_SIZE)
        tables = allocate_tables(BlockAllocator(NUM_BLOCKS), PROMPTS, extra_tokens=1)
        model.prefill(PROMPTS, cache, tables)
        model.decode([1] * len(PROMPTS), [len(p) for p in PROMPTS], cache, tables, layer_hook=hook)
    finally:
        for handle in handles:
            handle.remove()
    sequences = len(PROMPTS)
    per_layer = [[("hook", i)] + [("mlp", i)] * sequences for i in range(model.config.num_layers)]
    assert prefill_events == [e for layer in per_layer for e in layer]
    decode_events = events[sequences * model.config.num_layers :]  # after the plain prefill's MLPs
    assert decode_events == [e for i in range(model.config.num_layers) for e in (("hook", i), ("mlp", i))]


# --- paged cache bookkeeping ----------------------------------------------------------------------


def test_allocator_orders_differ_and_free_returns_blocks() -> None:
    plain, shifted, shuffled = (
        BlockAllocator(16),
        BlockAllocator(16, offset=5),
        BlockAllocator(16, shuffle_seed=0),
    )
    first = plain.allocate(4)
    assert first == [0, 1, 2, 3]
    assert shifted.allocate(4) == [5, 6, 7, 8]
    assert shuffled.allocate(4) != first

    assert plain.num_free == 12
    plain.free(first)
    assert plain.num_free == 16
    with pytest.raises(ValueError):
        plain.free(first)
    with pytest.raises(MemoryError):
        plain.allocate(17)


def test_cache_layout_and_block_table_checks() -> None:
    cache = PagedKVCache(2, num_blocks=8, block_size=4, num_kv_heads=2, head_dim=16, dtype=torch.bfloat16)
    assert [tuple(t.shape) for t in cache.layers] == [(2, 8, 4, 2, 16)] * 2
    assert cache.bytes_per_block == 2 * 4 * 2 * 16 * 2
    assert blocks_needed(0, 4) == 0 and blocks_needed(4, 4) == 1 and blocks_needed(5, 4) == 2

    slots = cache.slot_mapping([6, 2], torch.arange(6))
    assert slots.tolist() == [24, 25, 26, 27, 8, 9]
    key = torch.arange(6 * 2 * 16, dtype=torch.bfloat16).view(6, 2, 16)
    cache.write(1, slots, key, -key)
    # Token 5 lives in block table[5 // 4] = 2 at offset 5 % 4 = 1; K at index 0, V at index 1.
    assert torch.equal(cache.layers[1][0, 2, 1], key[5])
    assert torch.equal(cache.layers[1][1, 2, 1], -key[5])
    assert not cache.layers[0].any()
    read_key, read_value = cache.read(1, slots.view(2, 3))
    assert torch.equal(read_key, key.view(2, 3, 2, 16)) and torch.equal(read_value, -key.view(2, 3, 2, 16))
    with pytest.raises(ValueError):
        cache.slot_mapping([6], torch.arange(5))
    with pytest.raises(ValueError):
        cache.slot_mapping([8], torch.arange(2))


# --- block hash chain -----------------------------------------------------------------------------

TOKENS = list(range(100, 120))  # five full blocks of four
# blake2b-64 of the documented encoding of ([1, 2, 3], no parent, namespace "kvdump").
GOLDEN_HASH_1_2_3 = 2536400841317704265


def test_equal_prefixes_share_block_hashes() -> None:
    other = TOKENS[:12] + [1, 2, 3, 4, 5, 6, 7]

    ours, theirs = block_hashes(TOKENS, 4), block_hashes(other, 4)

    assert ours[:3] == theirs[:3]
    assert ours[3] != theirs[3]


def test_one_changed_token_changes_its_block_and_every_later_block() -> None:
    changed = list(TOKENS)
    changed[5] += 1  # inside block 1

    ours, theirs = block_hashes(TOKENS, 4), block_hashes(changed, 4)

    assert ours[0] == theirs[0]
    assert all(a != b for a, b in zip(ours[1:], theirs[1:]))


def test_partial_last_block_differs_from_full_block() -> None:
    assert len(block_hashes(TOKENS[:6], 4)) == 2
    assert block_hashes(TOKENS[:6], 4)[1] != block_hashes(TOKENS[:8], 4)[1]
    # A partial block must not hash like the same tokens padded with zeros to a full block.
    assert block_hashes([5, 6], 4) != block_hashes([5, 6, 0, 0], 4)


def test_namespace_and_parent() -> None:
    hashes = block_hashes(TOKENS, 4)
    assert block_hashes(TOKENS, 4, salt="model-b") != hashes
    assert block_hashes(TOKENS, 4, salt="model-b")[0] != hashes[0]
    # Continuing a chain from a stored parent gives what hashing the whole sequence gives.
    assert block_hashes(TOKENS[8:], 4, parent=hashes[1]) == hashes[2:]
    assert block_hash(TOKENS[:4]) == hashes[0]


def test_hashes_are_int64_and_stable_across_processes() -> None:
    hashes = block_hashes(TOKENS, 4, salt="ns")
    as_tensor = torch.tensor(hashes, dtype=torch.int64)
    assert as_tensor.tolist() == hashes
    assert any(h < 0 for h in block_hashes(list(range(400)), 4))  # the full signed range is used
    # Keys persisted in a shared store must not change silently between versions or processes.
    assert block_hash([1, 2, 3], salt="kvdump") == GOLDEN_HASH_1_2_3


def test_flatten_blocks_pairs_each_chain_with_its_leading_block_ids() -> None:
    from kvdump.hashing import flatten_blocks

    ids, hashes = flatten_blocks([[11, 12], [21]], [[5, 6, 7], [9, 3]])
    assert ids.tolist() == [5, 6, 9]
    assert hashes.tolist() == [11, 12, 21]
    assert ids.dtype == hashes.dtype == torch.int64
    with pytest.raises(ValueError, match="cannot hold"):
        flatten_blocks([[1, 2, 3]], [[0, 1]])
    with pytest.raises(ValueError, match="block tables"):
        flatten_blocks([[1]], [])


def test_flatten_blocks_lists_a_shared_prefix_block_once() -> None:
    from kvdump.hashing import flatten_blocks

    ids, hashes = flatten_blocks([[11, 12, 13], [11, 12, 24]], [[5, 6, 7], [1, 2, 3]])
    assert hashes.tolist() == [11, 12, 13, 24]
    assert ids.tolist() == [5, 6, 7, 3]  # the first prompt's copy of each shared block

"""The wrapped forward end to end: a ReferenceLlama prefill writes every layer through kvdump, a
decode side with other block ids finds the committed blocks, loads them and decodes the same tokens
as a single-process run; a forward or a store that fails leaves the writer idle and publishes nothing."""

from __future__ import annotations

import random

import pytest
import torch

import kvdump
from kvdump import StatusCode
from kvdump.hashing import block_hashes
from kvdump.models import BlockAllocator, LlamaConfig, ReferenceLlama, blocks_needed, greedy_continue
from kvdump.prompt_dump import prompt_dump_hook
from support import LIMIT

BLOCK = 4
NUM_BLOCKS = 64
NEW_TOKENS = 6


def make_prompts(vocab: int, lengths: list[int], seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(n)] for n in lengths]


def tables_for(prompts: list[list[int]], allocator: BlockAllocator) -> list[list[int]]:
    return [allocator.allocate(blocks_needed(len(p), BLOCK)) for p in prompts]


@pytest.fixture
def model() -> ReferenceLlama:
    return ReferenceLlama(LlamaConfig.tiny(num_layers=4))


def wrapped(model: ReferenceLlama, writer: kvdump.AsyncWriter) -> ReferenceLlama:
    return kvdump.wrap_model(model, writer, method="prefill", timeout=LIMIT)


def dumping(writer: kvdump.AsyncWriter, prompts: list[list[int]], tables: list[list[int]]):  # type: ignore[no-untyped-def]
    """The layer hook that stores every prompt's blocks, as a serving engine's prefill would."""
    return prompt_dump_hook(writer, prompts, tables, BLOCK, request="req-1")


def test_prefill_store_load_decode_matches_a_single_process_run(model, make_writer) -> None:
    vocab, layers = model.config.vocab_size, model.config.num_layers
    prompts = make_prompts(vocab, [13, 8, 1, 17], seed=1)  # partial last blocks, a one-token prompt
    hashes = [block_hashes(p, BLOCK) for p in prompts]

    # The reference: prefill and decode in one cache.
    ref_cache = model.new_cache(NUM_BLOCKS, BLOCK)
    ref_alloc = BlockAllocator(NUM_BLOCKS)
    ref_tables = tables_for(prompts, ref_alloc)
    ref_logits = model.prefill(prompts, ref_cache, ref_tables)
    reference = greedy_continue(
        model, ref_logits, prompts, ref_cache, [list(t) for t in ref_tables], NEW_TOKENS, ref_alloc
    )

    # The prefill worker: the wrapped forward dumps every layer and publishes after the barrier.
    writer = make_writer()
    wrapped(model, writer)
    pre_cache = model.new_cache(NUM_BLOCKS, BLOCK)
    pre_tables = tables_for(prompts, BlockAllocator(NUM_BLOCKS, offset=5))
    logits = model.prefill(prompts, pre_cache, pre_tables, layer_hook=dumping(writer, prompts, pre_tables))
    assert writer.state == "idle"
    assert torch.equal(logits, ref_logits)
    stats = writer.stats()
    assert (stats["submitted"], stats["completed"], stats["failed"], stats["cycles"]) == (layers, layers, 0, 1)

    # The decode worker: a fresh cache, blocks handed out in another order.
    store = writer.store
    for h in hashes:
        assert kvdump.lookup(store, h, num_layers=layers) == len(h)
        assert kvdump.lookup(store, h, num_layers=layers + 1) == 0  # the commit records the layer count
    dec_cache = model.new_cache(NUM_BLOCKS, BLOCK)
    dec_alloc = BlockAllocator(NUM_BLOCKS, shuffle_seed=7)
    dec_tables = tables_for(prompts, dec_alloc)
    assert [t for t in dec_tables] != [t for t in pre_tables]
    dst_ids = [i for t in dec_tables for i in t]
    flat_hashes = [x for h in hashes for x in h]
    for layer in range(layers):
        kvdump.load_cache_store(store, layer, dec_cache.layers[layer], dst_ids, flat_hashes)
    src_ids = [i for t in pre_tables for i in t]
    for layer in range(layers):
        assert torch.equal(dec_cache.layers[layer][:, dst_ids], pre_cache.layers[layer][:, src_ids])

    generated = greedy_continue(model, logits, prompts, dec_cache, [list(t) for t in dec_tables], NEW_TOKENS, dec_alloc)
    assert generated == reference


def test_async_loader_on_the_decode_side(model, make_writer) -> None:
    layers = model.config.num_layers
    prompts = make_prompts(model.config.vocab_size, [11, 9], seed=2)
    hashes = [x for p in prompts for x in block_hashes(p, BLOCK)]
    writer = make_writer()
    wrapped(model, writer)
    pre_cache = model.new_cache(NUM_BLOCKS, BLOCK)
    pre_tables = tables_for(prompts, BlockAllocator(NUM_BLOCKS))
    model.prefill(prompts, pre_cache, pre_tables, layer_hook=dumping(writer, prompts, pre_tables))
    assert kvdump.lookup(writer.store, hashes, num_layers=layers) == len(hashes)

    dec_cache = model.new_cache(NUM_BLOCKS, BLOCK)
    dec_tables = tables_for(prompts, BlockAllocator(NUM_BLOCKS, shuffle_seed=3))
    dst_ids = torch.tensor([i for t in dec_tables for i in t])
    loader = kvdump.KVLoader(writer.store, num_threads=2)
    try:
        loader.start()
        for layer in range(layers):
            loader.load_async(layer, dec_cache.layers[layer], dst_ids, torch.tensor(hashes))
        for layer in range(layers):
            loader.wait_layer(layer, timeout=LIMIT)
        loader.finish(timeout=LIMIT)
    finally:
        loader.close()
    src_ids = [i for t in pre_tables for i in t]
    for layer in range(layers):
        assert torch.equal(dec_cache.layers[layer][:, dst_ids], pre_cache.layers[layer][:, src_ids])


class Boom(Exception):
    pass


def test_a_forward_that_raises_publishes_nothing_and_leaves_the_writer_reusable(model, make_writer) -> None:
    layers = model.config.num_layers
    prompts = make_prompts(model.config.vocab_size, [10, 7], seed=3)
    hashes = [x for p in prompts for x in block_hashes(p, BLOCK)]
    writer = make_writer()
    wrapped(model, writer)
    cache = model.new_cache(NUM_BLOCKS, BLOCK)
    tables = tables_for(prompts, BlockAllocator(NUM_BLOCKS))
    seen: list[int] = []
    dump = dumping(writer, prompts, tables)

    def hook(layer: int, kv: torch.Tensor) -> None:
        dump(layer, kv)
        seen.append(layer)
        if layer == 1:
            raise Boom("layer 1 failed")

    with pytest.raises(Boom, match="layer 1 failed"):
        model.prefill(prompts, cache, tables, layer_hook=hook)
    assert seen == [0, 1]
    assert writer.state == "idle"
    # Layers 0 and 1 were queued (their records may exist), but nothing was published: not with the
    # full layer count, and not as a shorter two-layer request either.
    assert kvdump.lookup(writer.store, hashes) == 0
    assert kvdump.lookup(writer.store, hashes, num_layers=layers) == 0
    assert not any(writer.store.exists(kvdump.KeySpace().commit_key(h)) for h in hashes)
    assert writer.stats()["aborts"] == 1
    # No layer past the failure was ever written.
    assert not any(
        writer.store.exists(kvdump.KeySpace().block_key(h, layer)) for h in hashes for layer in range(2, layers)
    )

    # The writer (and the wrapped forward) work again.
    model.prefill(prompts, cache, tables, layer_hook=dump)
    assert writer.state == "idle"
    assert kvdump.lookup(writer.store, hashes, num_layers=layers) == len(hashes)


def test_a_store_failure_surfaces_as_write_error_and_publishes_nothing(model, make_writer) -> None:
    layers = model.config.num_layers
    prompts = make_prompts(model.config.vocab_size, [16, 12], seed=4)
    hashes = [x for p in prompts for x in block_hashes(p, BLOCK)]
    cache = model.new_cache(NUM_BLOCKS, BLOCK)
    record = 64 + cache.bytes_per_block
    # Room for about one layer and a half: the later layers cannot be stored.
    store = kvdump.MemoryStore(capacity_bytes=int(record * len(hashes) * 1.5))
    writer = make_writer(store)
    wrapped(model, writer)
    tables = tables_for(prompts, BlockAllocator(NUM_BLOCKS))

    with pytest.raises(kvdump.WriteError) as info:
        model.prefill(prompts, cache, tables, layer_hook=dumping(writer, prompts, tables))
    e = info.value
    assert e.code is StatusCode.STORE_FULL
    assert isinstance(e.layer, int) and 0 <= e.layer < layers
    assert e.request == "req-1"
    assert e.key.startswith("kvdump/tp0of1/") and e.key.endswith(f"/L{e.layer}")
    assert e.failed >= 1 and e.submitted == layers
    assert writer.state == "idle"
    assert kvdump.lookup(store, hashes) == 0
    assert store.stats()["rejected_full"] >= 1

    # The writer is reusable: the next wrapped forward (here with nothing to dump) runs its cycle.
    model.prefill(prompts, cache, tables)
    assert writer.state == "idle"
    assert writer.stats()["cycles"] == 2


@pytest.mark.parametrize(
    "not_a_writer",
    [
        pytest.param(lambda: "memory://", id="a-str"),
        pytest.param(lambda: kvdump.MemoryStore(capacity_bytes=1 << 20), id="a-store"),
        pytest.param(lambda: None, id="none"),
    ],
)
def test_wrap_model_refuses_a_non_writer_at_wrap_time(model, not_a_writer) -> None:  # type: ignore[no-untyped-def]
    prefill = model.prefill
    with pytest.raises(kvdump.KvdumpTypeError, match="^writer must be a kvdump.AsyncWriter"):
        kvdump.wrap_model(model, not_a_writer(), method="prefill")
    assert model.prefill == prefill  # left unwrapped


def test_wrap_model_twice_is_refused(model, make_writer) -> None:
    writer = make_writer()
    kvdump.wrap_model(model, writer, method="prefill")
    # A KvdumpValueError is still a ValueError, for callers that caught that.
    with pytest.raises(kvdump.KvdumpValueError, match="already wrapped"):
        kvdump.wrap_model(model, writer, method="prefill")
    with pytest.raises(kvdump.KvdumpValueError, match="already wrapped"):
        kvdump.wrap_model(model, make_writer(), method="prefill")
    # Wrapping did not nest: one call is one cycle.
    prompts = make_prompts(model.config.vocab_size, [5], seed=5)
    model.prefill(prompts, model.new_cache(8, BLOCK), [[0, 1]])
    assert writer.stats()["cycles"] == 1

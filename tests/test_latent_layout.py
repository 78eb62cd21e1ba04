"""MLA latent caches: one [num_blocks, block_size, head_size] tensor per layer, no V.

A latent block is stored as header + its latent bytes (layout field 1, one part), round-trips bit
for bit into other block ids through every store kind and the asynchronous loader, from dense,
block-strided and non-dense views; and a latent record never loads into a K/V cache (nor the
reverse)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

import kvdump
from kvdump import StatusCode
from test_cache_ops import HEADER, LIMIT, bits, key, random_bits

NUM_BLOCKS, BLOCK_SIZE, HEAD_SIZE = 10, 4, 576


def assert_blocks_moved(src: torch.Tensor, dst: torch.Tensor, src_ids: list[int], dst_ids: list[int]) -> None:
    """Latent blocks ``src_ids`` of ``src`` sit bit for bit at ``dst_ids`` of ``dst``; every other
    block of ``dst`` is still all zero bits."""
    for s, d in zip(src_ids, dst_ids):
        assert torch.equal(bits(dst[d]), bits(src[s])), f"block {s} -> {d} differs"
    untouched = [b for b in range(dst.shape[0]) if b not in set(dst_ids)]
    assert not bits(dst[untouched]).any(), "a block that was not loaded changed"


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> kvdump.CacheStore:
    """A store that lends its memory (the in-place paths) and one that does not (staging)."""
    if request.param == "memory":
        return kvdump.MemoryStore(capacity_bytes=64 << 20)
    return kvdump.FileStore(str(tmp_path / "store"))


def write_layers(
    writer: kvdump.AsyncWriter, caches: list[torch.Tensor], ids: object, hashes: object, request: str = "r"
) -> None:
    writer.init()
    for layer, kv in enumerate(caches):
        kvdump.write_cache_store(writer, layer, kv, ids, hashes, request=request)  # type: ignore[arg-type]
    report = writer.wait_all_done(timeout=LIMIT)
    assert (report.submitted, report.completed, report.failed) == (len(caches), len(caches), 0)


SRC_IDS = [7, 0, 3, 9]
DST_IDS = [2, 11, 5, 0]
HASHES = [-(1 << 63), 17, 0x0123_4567_89AB_CDEF, -5]


# The block ids as a tensor take the direct C entry; as a list, the registered op (the direct entry
# declines anything that is not a plain tensor).
@pytest.mark.parametrize("as_tensor", [True, False], ids=["direct", "op"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_round_trip_into_other_block_ids_is_bit_identical(make_writer, store, as_tensor, dtype) -> None:
    writer = make_writer(store)
    kv = random_bits((NUM_BLOCKS, BLOCK_SIZE, HEAD_SIZE), dtype, seed=1)
    original = kv.clone()
    ids: object = torch.tensor(SRC_IDS) if as_tensor else list(SRC_IDS)
    hashes: object = torch.tensor(HASHES) if as_tensor else list(HASHES)
    write_layers(writer, [kv], ids, hashes)
    assert torch.equal(bits(kv), bits(original))

    dst = torch.zeros((NUM_BLOCKS + 3, BLOCK_SIZE, HEAD_SIZE), dtype=dtype)
    kvdump.load_cache_store(writer.store, 0, dst, DST_IDS, HASHES)
    assert_blocks_moved(original, dst, SRC_IDS, DST_IDS)


def test_stored_record_is_header_and_latent_bytes(make_writer, store) -> None:
    writer = make_writer(store)
    kv = random_bits((NUM_BLOCKS, BLOCK_SIZE, HEAD_SIZE), torch.bfloat16, seed=2)
    write_layers(writer, [kv], SRC_IDS, HASHES)
    latent_bytes = BLOCK_SIZE * HEAD_SIZE * 2
    for block, block_hash in zip(SRC_IDS, HASHES):
        record = writer.store.get(key(block_hash, 0))
        assert record is not None
        assert len(record) == HEADER + latent_bytes
        assert record[:4] == b"KVDB"
        (layout,) = struct.unpack_from("<H", record, 10)
        assert layout == 1
        layer, block_size, heads, head_dim = struct.unpack_from("<4I", record, 12)
        assert (layer, block_size, heads, head_dim) == (0, BLOCK_SIZE, 1, HEAD_SIZE)
        (stored_hash, payload_bytes) = struct.unpack_from("<qQ", record, 32)
        assert (stored_hash, payload_bytes) == (block_hash, latent_bytes)
        assert record[HEADER:] == kv[block].contiguous().view(torch.uint8).numpy().tobytes()


def test_async_loader_round_trip(make_writer, make_loader, store) -> None:
    layers = 3
    writer = make_writer(store)
    caches = [random_bits((NUM_BLOCKS, BLOCK_SIZE, HEAD_SIZE), torch.bfloat16, seed=10 + i) for i in range(layers)]
    write_layers(writer, caches, SRC_IDS, HASHES)

    loader = make_loader(writer.store)
    dst = [torch.zeros((NUM_BLOCKS + 3, BLOCK_SIZE, HEAD_SIZE), dtype=torch.bfloat16) for _ in range(layers)]
    loader.start()
    for layer in range(layers):
        loader.load_async(layer, dst[layer], DST_IDS, HASHES)
    for layer in range(layers):
        loader.wait_layer(layer, timeout=LIMIT)
        assert_blocks_moved(caches[layer], dst[layer], SRC_IDS, DST_IDS)
    report = loader.finish(timeout=LIMIT)
    assert (report.completed, report.failed) == (layers, 0)


def test_round_trip_in_staging_chunks(make_writer, make_loader, tmp_path: Path) -> None:
    """A latent layer larger than the staging pool is written and loaded in several chunks (a file
    store does not lend memory, so both sides stage)."""
    record = HEADER + BLOCK_SIZE * HEAD_SIZE * 4
    writer = make_writer(kvdump.FileStore(str(tmp_path / "store")), staging_bytes=3 * record)
    kv = random_bits((NUM_BLOCKS, BLOCK_SIZE, HEAD_SIZE), torch.float32, seed=20)
    ids, hashes = list(range(NUM_BLOCKS)), list(range(100, 100 + NUM_BLOCKS))
    write_layers(writer, [kv], ids, hashes)
    assert writer.stats()["staging"]["leased_high_water"] <= 3 * record
    loader = make_loader(writer.store, staging_bytes=2 * record)
    dst = torch.zeros_like(kv)
    reversed_ids = ids[::-1]
    loader.load(0, dst, reversed_ids, hashes)
    assert_blocks_moved(kv, dst, ids, reversed_ids)


def _every_other_block(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # Blocks strided apart, each block's [block_size, head_size] dense: the memcpy path.
    base = torch.zeros((2 * NUM_BLOCKS, BLOCK_SIZE, HEAD_SIZE), dtype=dtype)
    return base, base[1::2]


def _padded_head_size(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # Rows of a block padded apart: a block is no one run of bytes, so the fallback copy runs.
    base = torch.zeros((NUM_BLOCKS, BLOCK_SIZE, HEAD_SIZE + 64), dtype=dtype)
    return base, base[..., 32 : 32 + HEAD_SIZE]


def _token_major(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    base = torch.zeros((BLOCK_SIZE, NUM_BLOCKS, HEAD_SIZE), dtype=dtype)
    return base, base.transpose(0, 1)


@pytest.mark.parametrize(
    "layout", [_every_other_block, _padded_head_size, _token_major], ids=lambda f: f.__name__.strip("_")
)
def test_strided_views_round_trip(make_writer, store, layout) -> None:
    dtype = torch.float16
    writer = make_writer(store)
    src_base, kv = layout(dtype)
    src_base.copy_(random_bits(tuple(src_base.shape), dtype, seed=30))
    assert not kv.is_contiguous()
    write_layers(writer, [kv], SRC_IDS, HASHES)

    dst_base, dst = layout(dtype)
    dst_ids = [1, 8, 4, 6]
    kvdump.load_cache_store(writer.store, 0, dst, dst_ids, HASHES)
    for s, d in zip(SRC_IDS, dst_ids):
        assert torch.equal(bits(dst[d]), bits(kv[s]))
    # Nothing outside the loaded blocks of the view (padding, the other blocks) was written.
    mask_base, mask_view = layout(torch.float32)
    mask_view[dst_ids] = 1.0
    assert not bits(dst_base)[mask_base == 0].any()

    # The same bytes load into a plain contiguous cache.
    plain = torch.zeros((NUM_BLOCKS, BLOCK_SIZE, HEAD_SIZE), dtype=dtype)
    kvdump.load_cache_store(writer.store, 0, plain, SRC_IDS, HASHES)
    for b in SRC_IDS:
        assert torch.equal(bits(plain[b]), bits(kv[b]))


def test_latent_record_into_a_key_value_cache_is_refused(make_writer, store) -> None:
    writer = make_writer(store)
    # One head of HEAD_SIZE: the K/V cache agrees with the latent one on dtype, block_size, heads and
    # head_dim, so only the record's layout tells them apart.
    kv = random_bits((NUM_BLOCKS, BLOCK_SIZE, HEAD_SIZE), torch.bfloat16, seed=40)
    write_layers(writer, [kv], SRC_IDS, HASHES)
    dst = torch.zeros((2, NUM_BLOCKS + 3, BLOCK_SIZE, 1, HEAD_SIZE), dtype=torch.bfloat16)
    with pytest.raises(kvdump.KvdumpValueError, match="layout") as info:
        kvdump.load_cache_store(writer.store, 0, dst, DST_IDS, HASHES)
    assert info.value.code is StatusCode.INVALID_ARGUMENT
    assert info.value.key == key(HASHES[0], 0)
    assert not bits(dst).any()

    k, v = torch.zeros_like(dst[0]), torch.zeros_like(dst[1])
    with pytest.raises(kvdump.KvdumpValueError, match="layout"):
        kvdump.load_cache_store(writer.store, 0, k, DST_IDS, HASHES, v_cache=v)
    assert not bits(k).any() and not bits(v).any()


def test_key_value_record_into_a_latent_cache_is_refused(make_writer, make_loader, store) -> None:
    writer = make_writer(store)
    kv = random_bits((2, NUM_BLOCKS, BLOCK_SIZE, 1, HEAD_SIZE), torch.bfloat16, seed=41)
    write_layers(writer, [kv], SRC_IDS, HASHES)
    dst = torch.zeros((NUM_BLOCKS + 3, BLOCK_SIZE, HEAD_SIZE), dtype=torch.bfloat16)
    with pytest.raises(kvdump.KvdumpValueError, match="layout") as info:
        kvdump.load_cache_store(writer.store, 0, dst, DST_IDS, HASHES)
    assert info.value.key == key(HASHES[0], 0)
    assert not bits(dst).any()

    loader = make_loader(writer.store)
    loader.start()
    loader.load_async(0, dst, DST_IDS, HASHES)
    with pytest.raises(kvdump.KvdumpValueError, match="layout"):
        loader.wait_layer(0, timeout=LIMIT)
    with pytest.raises(kvdump.WriteError, match="layout"):
        loader.finish(timeout=LIMIT)
    assert not bits(dst).any()


def test_latent_cache_with_a_v_cache_is_refused(make_writer) -> None:
    writer = make_writer()
    kv = torch.zeros((NUM_BLOCKS, BLOCK_SIZE, HEAD_SIZE), dtype=torch.bfloat16)
    writer.init()
    for ids in (torch.tensor([0]), [0]):  # the direct entry and the registered op
        with pytest.raises(kvdump.KvdumpValueError, match="latent.*v_cache=None"):
            kvdump.write_cache_store(writer, 0, kv, ids, [1], v_cache=torch.zeros_like(kv))
    assert writer.wait_all_done(timeout=LIMIT).submitted == 0
    with pytest.raises(kvdump.KvdumpValueError, match="v_cache=None"):
        kvdump.load_cache_store(writer.store, 0, kv, [0], [1], v_cache=torch.zeros_like(kv))


@pytest.mark.parametrize("shape", [(NUM_BLOCKS, BLOCK_SIZE), (NUM_BLOCKS, BLOCK_SIZE, 0), (NUM_BLOCKS, 0, 8)])
def test_other_shapes_are_refused(make_writer, shape) -> None:
    writer = make_writer()
    writer.init()
    with pytest.raises(kvdump.KvdumpValueError):
        kvdump.write_cache_store(writer, 0, torch.zeros(shape), [0], [1])
    assert writer.wait_all_done(timeout=LIMIT).submitted == 0


def test_commit_and_lookup_after_latent_writes(make_writer, store) -> None:
    layers = 2
    writer = make_writer(store)
    caches = [random_bits((NUM_BLOCKS, BLOCK_SIZE, HEAD_SIZE), torch.bfloat16, seed=50 + i) for i in range(layers)]
    assert kvdump.lookup(writer.store, HASHES, num_layers=layers) == 0
    write_layers(writer, caches, SRC_IDS, HASHES, request="r")
    assert kvdump.lookup(writer.store, HASHES, num_layers=layers) == len(HASHES)
    assert kvdump.lookup(writer.store, [*HASHES, 12345], num_layers=layers) == len(HASHES)
    # What lookup says is there loads.
    dst = torch.zeros((NUM_BLOCKS + 3, BLOCK_SIZE, HEAD_SIZE), dtype=torch.bfloat16)
    kvdump.load_cache_store(writer.store, 1, dst, DST_IDS, HASHES)
    assert_blocks_moved(caches[1], dst, SRC_IDS, DST_IDS)

"""The per-layer KV ops: write_cache_store -> wait_all_done -> load_cache_store is byte-exact.

Covers dtypes and odd shapes, the separate K/V form, non-contiguous caches, scattering into other
block ids, the stored record (header, size, checksum), the typed errors of bad input (raised at call
time with nothing queued), and the asynchronous per-layer loader."""

from __future__ import annotations

import struct
import threading

import pytest
import torch

import kvdump
from kvdump import StatusCode
from kvdump.testing import StallingStore
from support import LIMIT, wait_until

NS = "kvdump"
HEADER = 64

# Integer dtype of the same width: comparing through it compares bytes (NaN payloads, -0.0, ...).
_BITS = {
    torch.float32: torch.int32,
    torch.float64: torch.int64,
    torch.bfloat16: torch.int16,
    torch.float16: torch.int16,
}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns of ``t`` (same shape, strides and storage)."""
    return t.view(_BITS[t.dtype])


def random_bits(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A tensor of ``dtype`` whose elements are arbitrary bit patterns, NaNs and infs included."""
    gen = torch.Generator().manual_seed(seed)
    int_dtype = _BITS[dtype]
    info = torch.iinfo(int_dtype)
    return torch.randint(info.min, info.max, shape, generator=gen, dtype=torch.int64).to(int_dtype).view(dtype)


def random_hashes(n: int, seed: int) -> list[int]:
    """``n`` distinct int64 hashes; the extremes of int64 are among them when n allows."""
    gen = torch.Generator().manual_seed(seed)
    values = [-(1 << 63), (1 << 63) - 1, -1, 0]
    values += torch.randint(-(1 << 62), 1 << 62, (n,), generator=gen, dtype=torch.int64).tolist()
    return list(dict.fromkeys(values))[:n]


def pick(num_blocks: int, n: int, seed: int) -> list[int]:
    """``n`` distinct block ids out of ``num_blocks``, in a scrambled order."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(num_blocks, generator=gen)[:n].tolist()


def key(block_hash: int, layer: int) -> str:
    return kvdump.KeySpace(NS).block_key(block_hash, layer)


def write_layer(
    writer: kvdump.AsyncWriter, layer: int, kv: torch.Tensor, ids: list[int], hashes: list[int], **kwargs: object
) -> None:
    writer.init()
    kvdump.write_cache_store(writer, layer, kv, ids, hashes, **kwargs)  # type: ignore[arg-type]
    report = writer.wait_all_done(timeout=LIMIT)
    assert report == kvdump.CycleReport(submitted=1, completed=1, failed=0, cancelled=0)


def assert_blocks_moved(src: torch.Tensor, dst: torch.Tensor, src_ids: list[int], dst_ids: list[int]) -> None:
    """Blocks ``src_ids`` of the [2, blocks, ...] ``src`` sit bit for bit at ``dst_ids`` of ``dst``;
    every other block of ``dst`` is still all zero bits."""
    for s, d in zip(src_ids, dst_ids):
        assert torch.equal(bits(dst[:, d]), bits(src[:, s])), f"block {s} -> {d} differs"
    untouched = [b for b in range(dst.shape[1]) if b not in set(dst_ids)]
    if untouched:
        assert not bits(dst[:, untouched]).any(), "a block that was not loaded changed"


# --- byte-exact round trips ------------------------------------------------------------------------

# (dtype, num_blocks, block_size, num_kv_heads, head_dim, blocks written)
SHAPES = [
    pytest.param(torch.float32, 8, 16, 2, 8, 5, id="f32-typical"),
    pytest.param(torch.bfloat16, 8, 16, 2, 8, 5, id="bf16-typical"),
    pytest.param(torch.float16, 8, 16, 2, 8, 5, id="f16-typical"),
    pytest.param(torch.float32, 6, 1, 1, 1, 4, id="f32-bs1-h1-d1"),
    pytest.param(torch.bfloat16, 6, 3, 3, 5, 4, id="bf16-bs3-heads3-d5"),
    pytest.param(torch.float16, 9, 7, 3, 1, 6, id="f16-bs7-heads3-d1"),
    pytest.param(torch.float32, 1, 7, 3, 5, 1, id="f32-single-block"),
    pytest.param(torch.bfloat16, 600, 3, 2, 4, 500, id="bf16-many-blocks"),
    pytest.param(torch.float64, 5, 4, 2, 6, 3, id="f64"),
]


@pytest.mark.parametrize(("dtype", "num_blocks", "block_size", "heads", "head_dim", "n"), SHAPES)
def test_round_trip_is_byte_exact(make_writer, dtype, num_blocks, block_size, heads, head_dim, n) -> None:
    writer = make_writer()
    kv = random_bits((2, num_blocks, block_size, heads, head_dim), dtype, seed=n)
    original = kv.clone()
    src_ids = pick(num_blocks, n, seed=1)
    hashes = random_hashes(n, seed=2)
    write_layer(writer, 3, kv, src_ids, hashes)
    assert torch.equal(bits(kv), bits(original))  # the write never touches the cache

    # The decode side: a cache of another size, the blocks scattered into different ids.
    dst_blocks = num_blocks + 3
    dst_ids = pick(dst_blocks, n, seed=3)
    dst = torch.zeros((2, dst_blocks, block_size, heads, head_dim), dtype=dtype)
    kvdump.load_cache_store(writer.store, 3, dst, dst_ids, hashes)
    assert_blocks_moved(original, dst, src_ids, dst_ids)


def test_round_trip_in_staging_chunks(make_writer, make_loader) -> None:
    """A layer larger than the staging pool is written and loaded in several chunks."""
    shape = (2, 40, 4, 2, 8)
    record = HEADER + 2 * 4 * 2 * 8 * 4
    writer = make_writer(staging_bytes=3 * record)
    kv = random_bits(shape, torch.float32, seed=5)
    src_ids = pick(40, 31, seed=6)
    hashes = random_hashes(31, seed=7)
    write_layer(writer, 0, kv, src_ids, hashes)
    assert writer.stats()["staging"]["leased_high_water"] <= 3 * record
    loader = make_loader(writer.store, staging_bytes=2 * record)
    dst = torch.zeros(shape, dtype=torch.float32)
    dst_ids = pick(40, 31, seed=8)
    loader.load(0, dst, dst_ids, hashes)
    assert_blocks_moved(kv, dst, src_ids, dst_ids)


def test_separate_k_and_v(make_writer) -> None:
    writer = make_writer()
    k = random_bits((7, 5, 3, 4), torch.bfloat16, seed=10)
    v = random_bits((7, 5, 3, 4), torch.bfloat16, seed=11)
    src_ids, hashes = [6, 0, 3], random_hashes(3, seed=12)
    write_layer(writer, 1, k, src_ids, hashes, v_cache=v)

    k2 = torch.zeros((9, 5, 3, 4), dtype=torch.bfloat16)
    v2 = torch.zeros_like(k2)
    dst_ids = [2, 8, 5]
    kvdump.load_cache_store(writer.store, 1, k2, dst_ids, hashes, v_cache=v2)
    assert_blocks_moved(torch.stack([k, v]), torch.stack([k2, v2]), src_ids, dst_ids)

    # The stored bytes do not depend on the form: the same blocks load into a combined cache.
    combined = torch.zeros((2, 4, 5, 3, 4), dtype=torch.bfloat16)
    kvdump.load_cache_store(writer.store, 1, combined, [3, 1, 0], hashes)
    assert_blocks_moved(torch.stack([k, v]), combined, src_ids, [3, 1, 0])


def _padded_heads(nb: int, bs: int, h: int, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    base = torch.zeros((2, nb, bs, h + 2, d), dtype=dtype)
    return base, base[:, :, :, 1 : h + 1]


def _padded_head_dim(nb: int, bs: int, h: int, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    base = torch.zeros((2, nb, bs, h, d + 3), dtype=dtype)
    return base, base[..., :d]


def _token_major(nb: int, bs: int, h: int, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    base = torch.zeros((2, bs, nb, h, d), dtype=dtype)
    return base, base.permute(0, 2, 1, 3, 4)


def _kv_inner(nb: int, bs: int, h: int, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # [blocks, 2, ...] storage: each block dense, but K and V of a block are adjacent.
    base = torch.zeros((nb, 2, bs, h, d), dtype=dtype)
    return base, base.transpose(0, 1)


def _every_other_block(nb: int, bs: int, h: int, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    base = torch.zeros((2, 2 * nb, bs, h, d), dtype=dtype)
    return base, base[:, 1::2]


LAYOUTS = [_padded_heads, _padded_head_dim, _token_major, _kv_inner, _every_other_block]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_non_contiguous_caches_round_trip(make_writer, layout, dtype) -> None:
    nb, bs, h, d = 6, 3, 2, 5
    writer = make_writer()
    src_base, kv = layout(nb, bs, h, d, dtype)
    src_base.copy_(random_bits(tuple(src_base.shape), dtype, seed=20))
    assert not kv.is_contiguous()
    src_ids, hashes = [5, 1, 2], random_hashes(3, seed=21)
    write_layer(writer, 0, kv, src_ids, hashes)

    dst_base, dst = layout(nb, bs, h, d, dtype)
    dst_ids = [0, 4, 3]
    kvdump.load_cache_store(writer.store, 0, dst, dst_ids, hashes)
    assert_blocks_moved(kv, dst, src_ids, dst_ids)
    # Nothing outside the view (padding, the other blocks) was written.
    mask_base, mask_view = layout(nb, bs, h, d, torch.float32)
    mask_view.fill_(1.0)
    outside = mask_base == 0
    assert outside.any() or layout in (_token_major, _kv_inner)
    assert not bits(dst_base)[outside].any()

    # The same blocks, loaded into a plain contiguous cache, are the same bytes.
    plain = torch.zeros((2, nb, bs, h, d), dtype=dtype)
    kvdump.load_cache_store(writer.store, 0, plain, src_ids, hashes)
    for b in src_ids:
        assert torch.equal(bits(plain[:, b]), bits(kv[:, b]))


def test_a_layer_of_a_stacked_all_layers_cache(make_writer) -> None:
    all_layers = random_bits((4, 2, 5, 2, 2, 4), torch.float32, seed=30)
    writer = make_writer()
    hashes = random_hashes(2, seed=31)
    for layer in range(4):
        write_layer(writer, layer, all_layers[layer], [4, 0], hashes)
    dst = torch.zeros((4, 2, 5, 2, 2, 4), dtype=torch.float32)
    for layer in range(4):
        kvdump.load_cache_store(writer.store, layer, dst[layer], [1, 2], hashes)
    for layer in range(4):
        assert_blocks_moved(all_layers[layer], dst[layer], [4, 0], [1, 2])


def test_same_blocks_under_different_layers_and_hashes_are_kept_apart(make_writer) -> None:
    writer = make_writer()
    a = random_bits((2, 3, 2, 1, 4), torch.float32, seed=40)
    b = random_bits((2, 3, 2, 1, 4), torch.float32, seed=41)
    write_layer(writer, 0, a, [0, 1], [100, 101])
    write_layer(writer, 1, b, [0, 1], [100, 101])
    write_layer(writer, 0, b, [2], [102])
    dst = torch.zeros((2, 3, 2, 1, 4), dtype=torch.float32)
    kvdump.load_cache_store(writer.store, 1, dst, [1, 0], [100, 101])
    assert torch.equal(bits(dst[:, 1]), bits(b[:, 0])) and torch.equal(bits(dst[:, 0]), bits(b[:, 1]))
    kvdump.load_cache_store(writer.store, 0, dst, [0, 1, 2], [100, 101, 102])
    assert torch.equal(bits(dst[:, :2]), bits(a[:, :2]))
    assert torch.equal(bits(dst[:, 2]), bits(b[:, 2]))


# --- the stored record -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "shape"), [(torch.float32, (4, 3, 5)), (torch.bfloat16, (1, 1, 1)), (torch.float16, (7, 3, 2))]
)
def test_stored_record_layout(make_writer, dtype, shape) -> None:
    bs, h, d = shape
    writer = make_writer()
    kv = random_bits((2, 3, bs, h, d), dtype, seed=50)
    hashes = [-(1 << 63), 0x1234_5678_9ABC]
    write_layer(writer, 5, kv, [2, 0], hashes)
    half = bs * h * d * kv.element_size()
    for block, block_hash in zip([2, 0], hashes):
        record = writer.store.get(key(block_hash, 5))
        assert record is not None
        assert len(record) == HEADER + 2 * half
        assert record[:4] == b"KVDB"
        layer, block_size, heads, head_dim = struct.unpack_from("<4I", record, 12)
        assert (layer, block_size, heads, head_dim) == (5, bs, h, d)
        (stored_hash, payload_bytes) = struct.unpack_from("<qQ", record, 32)
        assert (stored_hash, payload_bytes) == (block_hash, 2 * half)
        # K then V of the block as raw elements.
        expected = kv[0, block].contiguous().view(torch.uint8).numpy().tobytes()
        expected += kv[1, block].contiguous().view(torch.uint8).numpy().tobytes()
        assert record[HEADER:] == expected


@pytest.mark.parametrize("offset", [HEADER, HEADER + 1, -1], ids=["first", "second", "last"])
def test_a_flipped_payload_byte_raises_checksum_error(make_writer, offset) -> None:
    writer = make_writer()
    kv = random_bits((2, 4, 4, 2, 8), torch.float16, seed=60)
    hashes = random_hashes(3, seed=61)
    write_layer(writer, 2, kv, [0, 1, 3], hashes)
    bad_key = key(hashes[1], 2)
    record = bytearray(writer.store.get(bad_key))
    record[offset] ^= 0x10
    writer.store.put(bad_key, bytes(record))

    dst = torch.zeros_like(kv)
    with pytest.raises(kvdump.ChecksumError) as info:
        kvdump.load_cache_store(writer.store, 2, dst, [3, 2, 1], hashes)
    assert info.value.key == bad_key
    assert info.value.code is StatusCode.CHECKSUM_MISMATCH
    # The good blocks still load.
    kvdump.load_cache_store(writer.store, 2, dst, [3, 1], [hashes[0], hashes[2]])
    assert torch.equal(bits(dst[:, 3]), bits(kv[:, 0]))
    assert torch.equal(bits(dst[:, 1]), bits(kv[:, 3]))


def test_missing_block_raises_key_not_found_naming_the_key(make_writer) -> None:
    writer = make_writer()
    kv = random_bits((2, 4, 2, 2, 4), torch.float32, seed=70)
    write_layer(writer, 0, kv, [0, 1], [7, 8])
    dst = torch.zeros_like(kv)
    with pytest.raises(kvdump.KeyNotFoundError) as info:
        kvdump.load_cache_store(writer.store, 0, dst, [0, 1, 2], [7, 8, 9])
    assert info.value.key == key(9, 0)
    assert info.value.code is StatusCode.NOT_FOUND
    with pytest.raises(kvdump.KeyNotFoundError) as info:
        kvdump.load_cache_store(writer.store, 1, dst, [0], [7])  # stored, but not for this layer
    assert info.value.key == key(7, 1)
    with pytest.raises(kvdump.KeyNotFoundError) as info:
        kvdump.load_cache_store(writer.store, 0, dst, [0], [7], key_space=kvdump.KeySpace("other"))
    assert info.value.key == kvdump.KeySpace("other").block_key(7, 0)


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        pytest.param(torch.float16, (2, 4, 3, 2, 8), id="smaller-dtype"),
        pytest.param(torch.float64, (2, 4, 3, 2, 8), id="larger-dtype"),
        pytest.param(torch.int32, (2, 4, 3, 2, 8), id="int-dtype"),
        pytest.param(torch.float32, (2, 4, 3, 2, 4), id="smaller-head-dim"),
        pytest.param(torch.float32, (2, 4, 3, 2, 16), id="larger-head-dim"),
        pytest.param(torch.float32, (2, 4, 3, 4, 4), id="same-size-other-shape"),
        pytest.param(torch.float32, (2, 4, 6, 2, 8), id="larger-block-size"),
    ],
)
def test_loading_into_a_different_cache_shape_or_dtype_is_refused(make_writer, dtype, shape) -> None:
    writer = make_writer()
    kv = random_bits((2, 4, 3, 2, 8), torch.float32, seed=80)
    write_layer(writer, 0, kv, [1, 2], [1, 2])
    dst = torch.zeros(shape, dtype=dtype)
    with pytest.raises(kvdump.KvdumpValueError):
        kvdump.load_cache_store(writer.store, 0, dst, [0, 3], [1, 2])
    assert not dst.any()


def test_loading_bfloat16_into_float16_is_refused(make_writer) -> None:
    writer = make_writer()
    kv = random_bits((2, 2, 3, 2, 8), torch.bfloat16, seed=81)
    write_layer(writer, 0, kv, [1], [1])
    dst = torch.zeros((2, 2, 3, 2, 8), dtype=torch.float16)  # same bytes per block, other dtype
    with pytest.raises(kvdump.KvdumpValueError) as info:
        kvdump.load_cache_store(writer.store, 0, dst, [0], [1])
    assert info.value.key == key(1, 0)
    assert not bits(dst).any()


# --- bad input: typed error at call time, nothing queued -------------------------------------------

KV = (2, 6, 3, 2, 4)


def _kv(dtype: torch.dtype = torch.float32, shape: tuple[int, ...] = KV) -> torch.Tensor:
    return torch.ones(shape, dtype=dtype)


BAD_WRITES = [
    pytest.param(lambda w: (w, 0, _kv(torch.int32), [0], [1]), {}, id="int32-kv"),
    pytest.param(lambda w: (w, 0, _kv(torch.bool), [0], [1]), {}, id="bool-kv"),
    pytest.param(lambda w: (w, 0, _kv(shape=KV[1:]), [0], [1]), {}, id="rank-4-without-v"),
    pytest.param(lambda w: (w, 0, _kv(shape=(1, *KV)), [0], [1]), {}, id="rank-6"),
    pytest.param(lambda w: (w, 0, _kv(shape=(3, *KV[1:])), [0], [1]), {}, id="leading-dim-3"),
    pytest.param(lambda w: (w, 0, _kv(), [6], [1]), {}, id="id-past-the-end"),
    pytest.param(lambda w: (w, 0, _kv(), [0, 1 << 40], [1, 2]), {}, id="huge-id"),
    pytest.param(lambda w: (w, 0, _kv(), [0, -1], [1, 2]), {}, id="negative-id"),
    pytest.param(lambda w: (w, 0, _kv(), [0, 1], [1]), {}, id="fewer-hashes"),
    pytest.param(lambda w: (w, 0, _kv(), [0], [1, 2]), {}, id="more-hashes"),
    pytest.param(lambda w: (w, 0, _kv(), torch.tensor([[0]]), [1]), {}, id="2-d-ids"),
    pytest.param(lambda w: (w, 0, _kv(), torch.tensor([0.0]), [1]), {}, id="float-ids"),
    pytest.param(lambda w: (w, 0, _kv(), [0], torch.tensor([1], dtype=torch.int32)), {}, id="int32-hashes"),
    pytest.param(lambda w: (w, -1, _kv(), [0], [1]), {}, id="negative-layer"),
    pytest.param(lambda w: (w, 0, _kv().to("meta"), [0], [1]), {}, id="meta-kv"),
    pytest.param(lambda w: (w, 0, _kv(), torch.tensor([0], device="meta"), [1]), {}, id="meta-ids"),
    pytest.param(lambda w: (w, 0, _kv(), [0], torch.tensor([1], device="meta")), {}, id="meta-hashes"),
    pytest.param(lambda w: (w, 0, _kv(shape=(2, 6, 3, 2, 0)), [0], [1]), {}, id="empty-head-dim"),
    pytest.param(lambda w: (w, 0, _kv(shape=(2, 6, 3, 2, 8))[..., ::2], [0], [1]), {}, id="strided-head-dim"),
    pytest.param(
        lambda w: (w, 0, _kv(shape=KV[1:]), [0], [1]), {"v_cache": _kv(shape=(6, 3, 2, 5))}, id="v-shape-differs"
    ),
    pytest.param(
        lambda w: (w, 0, _kv(shape=KV[1:]), [0], [1]),
        {"v_cache": _kv(torch.float16, shape=KV[1:])},
        id="v-dtype-differs",
    ),
    pytest.param(
        lambda w: (w, 0, _kv(shape=KV[1:]), [0], [1]), {"v_cache": _kv(shape=KV[1:]).to("meta")}, id="v-on-other-device"
    ),
]


@pytest.mark.parametrize(("args", "kwargs"), BAD_WRITES)
def test_bad_write_raises_value_error_and_queues_nothing(make_writer, args, kwargs) -> None:
    writer = make_writer()
    writer.init()
    before = writer.stats()["submitted"]
    with pytest.raises(kvdump.KvdumpValueError) as info:
        kvdump.write_cache_store(*args(writer), **kwargs)
    assert info.value.code is StatusCode.INVALID_ARGUMENT
    assert writer.stats()["submitted"] == before
    assert writer.state == "accepting"
    # The cycle is intact: a good write after the bad one is the only task in it.
    kvdump.write_cache_store(writer, 0, _kv(), [0], [1])
    assert writer.wait_all_done(timeout=LIMIT) == kvdump.CycleReport(1, 1, 0, 0)


@pytest.mark.parametrize(
    "ids",
    [
        pytest.param("not ints", id="string"),
        pytest.param([0, "x"], id="mixed"),
        pytest.param(None, id="none"),
        pytest.param([0.7], id="float"),  # refused, not truncated to block 0
        pytest.param([0, 1.0], id="integral-float"),
    ],
)
def test_ids_that_are_not_ints_raise_type_error(make_writer, ids) -> None:
    writer = make_writer()
    writer.init()
    with pytest.raises(TypeError):
        kvdump.write_cache_store(writer, 0, _kv(), ids, [1])
    assert writer.stats()["submitted"] == 0
    writer.abort()


@pytest.mark.parametrize(
    "not_a_writer",
    [
        pytest.param(lambda w: w._impl, id="the-native-writer"),
        pytest.param(lambda w: w.torch_writer, id="the-torch-writer"),
        pytest.param(lambda w: None, id="none"),
        pytest.param(lambda w: w.store, id="a-store"),
    ],
)
def test_a_writer_that_is_not_an_async_writer_raises_type_error(make_writer, not_a_writer) -> None:
    writer = make_writer()
    writer.init()
    with pytest.raises(TypeError):
        kvdump.write_cache_store(not_a_writer(writer), 0, _kv(), [0], [1])
    assert writer.stats()["submitted"] == 0
    writer.abort()


def test_a_closed_writer_raises(make_writer) -> None:
    writer = make_writer()
    writer.init()
    writer.close()
    with pytest.raises(kvdump.LifecycleError):
        kvdump.write_cache_store(writer, 0, _kv(), [0], [1])


def test_write_outside_a_cycle_raises_lifecycle_error(make_writer) -> None:
    writer = make_writer()
    with pytest.raises(kvdump.LifecycleError):  # before init
        kvdump.write_cache_store(writer, 0, _kv(), [0], [1])
    write_layer(writer, 0, _kv(), [0], [1])
    with pytest.raises(kvdump.LifecycleError):  # after wait_all_done
        kvdump.write_cache_store(writer, 0, _kv(), [0], [1])
    writer.init()
    writer.abort()
    with pytest.raises(kvdump.LifecycleError):  # after abort
        kvdump.write_cache_store(writer, 0, _kv(), [0], [1])
    assert writer.stats()["submitted"] == 1
    assert writer.state == "idle"


def test_write_with_no_blocks_outside_a_cycle_raises_lifecycle_error(make_writer) -> None:
    writer = make_writer()
    with pytest.raises(kvdump.LifecycleError):
        kvdump.write_cache_store(writer, 0, _kv(), [], [])


def test_wait_layer_after_finish_reports_a_load_that_missed_as_not_found(make_loader) -> None:
    loader = make_loader(kvdump.MemoryStore(capacity_bytes=1 << 20))
    loader.start()
    loader.load_async(0, _kv(), [0], [12345])  # nothing stored under this hash
    with pytest.raises(kvdump.WriteError) as failed:
        loader.finish(timeout=LIMIT)
    assert failed.value.code is StatusCode.NOT_FOUND
    # The session is over, but layer 0 did load, and missed: not a lifecycle mistake.
    with pytest.raises(kvdump.KeyNotFoundError) as info:
        loader.wait_layer(0, timeout=LIMIT)
    assert info.value.key.endswith("/L0")


def test_a_uint64_block_id_out_of_range_is_named_with_its_own_value(make_writer) -> None:
    writer = make_writer()
    writer.init()
    ids = torch.tensor([2**63 + 1, 1], dtype=torch.uint64)
    with pytest.raises(kvdump.KvdumpValueError, match=r"block_ids\[0\] = 9223372036854775809 is out of range"):
        kvdump.write_cache_store(writer, 0, _kv(), ids, [5, 6])
    writer.abort()


def test_bad_load_raises_value_error(make_writer) -> None:
    writer = make_writer()
    write_layer(writer, 0, _kv(), [0], [1])
    for args, kwargs in [
        ((_kv(torch.int32), [0], [1]), {}),
        ((_kv(shape=KV[1:]), [0], [1]), {}),
        ((_kv(), [6], [1]), {}),
        ((_kv(), [-1], [1]), {}),
        ((_kv(), [0, 1], [1]), {}),
        ((_kv().to("meta"), [0], [1]), {}),
        ((_kv(shape=KV[1:]), [0], [1]), {"v_cache": _kv(shape=(6, 3, 2, 5))}),
    ]:
        with pytest.raises(kvdump.KvdumpValueError):
            kvdump.load_cache_store(writer.store, 0, *args, **kwargs)


# --- the asynchronous loader -----------------------------------------------------------------------


def test_async_loader_gives_the_same_bytes(make_writer, make_loader) -> None:
    layers, shape = 4, (2, 12, 4, 2, 8)
    writer = make_writer()
    caches = [random_bits(shape, torch.bfloat16, seed=90 + i) for i in range(layers)]
    src_ids, hashes = pick(12, 9, seed=95), random_hashes(9, seed=96)
    writer.init()
    for layer, kv in enumerate(caches):
        kvdump.write_cache_store(writer, layer, kv, src_ids, hashes)
    assert writer.wait_all_done(timeout=LIMIT).completed == layers

    loader = make_loader(writer.store)
    dst = [torch.zeros((2, 15, 4, 2, 8), dtype=torch.bfloat16) for _ in range(layers)]
    dst_ids = pick(15, 9, seed=97)
    for _ in range(2):  # a loader runs one session after another
        for d in dst:
            d.zero_()
        loader.start()
        for layer in range(layers):
            loader.load_async(layer, dst[layer], torch.tensor(dst_ids), torch.tensor(hashes))
        for layer in range(layers):
            loader.wait_layer(layer, timeout=LIMIT)
            assert_blocks_moved(caches[layer], dst[layer], src_ids, dst_ids)
        loader.finish(timeout=LIMIT)
        assert loader.state == "idle"
    stats = loader.stats()
    assert (stats["submitted"], stats["completed"], stats["failed"]) == (2 * layers, 2 * layers, 0)


def test_wait_layer_on_a_layer_never_started(make_loader) -> None:
    loader = make_loader(kvdump.MemoryStore(capacity_bytes=1 << 20))
    # No session open and nothing loaded: a lifecycle mistake, as finish() without start() is.
    with pytest.raises(kvdump.LifecycleError, match="start"):
        loader.wait_layer(0, timeout=LIMIT)
    loader.start()
    with pytest.raises(kvdump.KeyNotFoundError) as info:
        loader.wait_layer(3, timeout=LIMIT)
    assert info.value.code is StatusCode.NOT_FOUND
    loader.finish(timeout=LIMIT)


def test_a_failing_async_load_raises_from_wait_layer_and_finish(make_writer, make_loader) -> None:
    writer = make_writer()
    kv = random_bits((2, 4, 2, 2, 4), torch.float32, seed=100)
    write_layer(writer, 0, kv, [0, 1], [10, 11])
    write_layer(writer, 1, kv, [0, 1], [10, 11])
    loader = make_loader(writer.store)
    dst0, dst1 = torch.zeros_like(kv), torch.zeros_like(kv)
    loader.start()
    loader.load_async(0, dst0, [2, 3], [10, 11])
    loader.load_async(1, dst1, [2, 3], [10, 12])  # block 12 was never stored
    loader.wait_layer(0, timeout=LIMIT)
    assert_blocks_moved(kv, dst0, [0, 1], [2, 3])
    with pytest.raises(kvdump.KeyNotFoundError) as info:
        loader.wait_layer(1, timeout=LIMIT)
    assert info.value.key == key(12, 1)
    with pytest.raises(kvdump.WriteError) as werr:
        loader.finish(timeout=LIMIT)
    assert werr.value.key == key(12, 1)
    assert werr.value.layer == 1
    assert werr.value.code is StatusCode.NOT_FOUND
    assert (werr.value.failed, werr.value.submitted) == (1, 2)
    assert loader.state == "idle"
    # The loader is reusable.
    loader.start()
    loader.load_async(1, dst1, [2, 3], [10, 11])
    loader.wait_layer(1, timeout=LIMIT)
    loader.finish(timeout=LIMIT)
    assert_blocks_moved(kv, dst1, [0, 1], [2, 3])


def test_a_corrupt_block_fails_its_async_layer_with_checksum_error(make_writer, make_loader) -> None:
    writer = make_writer()
    kv = random_bits((2, 3, 2, 2, 4), torch.float32, seed=110)
    write_layer(writer, 0, kv, [0, 1], [20, 21])
    record = bytearray(writer.store.get(key(21, 0)))
    record[-3] ^= 0xFF
    writer.store.put(key(21, 0), bytes(record))
    loader = make_loader(writer.store)
    loader.start()
    loader.load_async(0, torch.zeros_like(kv), [0, 1], [20, 21])
    with pytest.raises(kvdump.ChecksumError) as info:
        loader.wait_layer(0, timeout=LIMIT)
    assert info.value.key == key(21, 0)
    with pytest.raises(kvdump.WriteError) as werr:
        loader.finish(timeout=LIMIT)
    assert werr.value.code is StatusCode.CHECKSUM_MISMATCH


def test_load_async_outside_a_session_and_bad_input(make_writer, make_loader) -> None:
    writer = make_writer()
    write_layer(writer, 0, _kv(), [0], [1])
    loader = make_loader(writer.store)
    with pytest.raises(kvdump.LifecycleError):
        loader.load_async(0, _kv(), [0], [1])
    loader.start()
    with pytest.raises(kvdump.KvdumpValueError):
        loader.load_async(0, _kv(torch.int32), [0], [1])
    with pytest.raises(kvdump.KvdumpValueError):
        loader.load_async(0, _kv(), [6], [1])
    assert loader.stats()["submitted"] == 0
    loader.finish(timeout=LIMIT)
    assert loader.stats()["submitted"] == 0


def test_abort_wakes_waiters_of_queued_loads(make_writer, make_loader) -> None:
    writer = make_writer()
    kv = random_bits((2, 2, 2, 2, 4), torch.float32, seed=120)
    for layer in range(3):
        write_layer(writer, layer, kv, [0], [1])
    # Reads block on an event rather than a delay: a delay could run out before abort() on a busy
    # machine, leaving nothing queued to cancel.
    gated = StallingStore(writer.store)
    make_writer.events.append(gated.release)
    loader = make_loader(gated, num_threads=1)
    loader.start()
    dst = [torch.zeros_like(kv) for _ in range(3)]
    for layer in range(3):
        loader.load_async(layer, dst[layer], [1], [1])
    assert gated.entered.wait(LIMIT)  # layer 0 is blocked in the store, layers 1 and 2 are queued
    releaser = threading.Thread(target=lambda: wait_until(lambda: loader.state == "aborting") and gated.release.set())
    releaser.start()
    loader.abort()  # cancels the queued loads, then waits for the running one
    releaser.join(LIMIT)
    for layer in (1, 2):
        with pytest.raises(kvdump.AbortedError):
            loader.wait_layer(layer, timeout=LIMIT)
    loader.wait_layer(0, timeout=LIMIT)  # the load that was running finished
    assert_blocks_moved(kv, dst[0], [0], [1])
    assert loader.state == "idle"

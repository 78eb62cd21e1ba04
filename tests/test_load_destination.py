"""What a load may write into, and what the write and load calls refuse before touching anything:
a destination whose elements would share memory (a load would write one block or part over
another), a cache autograd would have to track, and tensors that are not dense."""

from __future__ import annotations

import warnings

import pytest
import torch

import kvdump

NB, BS, H, D = 6, 3, 2, 4
IDS = [0, 1, 2]
HASHES = [101, 102, 103]


@pytest.fixture
def store() -> kvdump.MemoryStore:
    store = kvdump.MemoryStore(capacity_bytes=1 << 24)
    writer = kvdump.AsyncWriter(store, num_threads=1)
    kv = torch.arange(2 * NB * BS * H * D, dtype=torch.float32).reshape(2, NB, BS, H, D)
    with writer.cycle(timeout=30):
        kvdump.write_cache_store(writer, 0, kv, IDS, HASHES)
    writer.close()
    return store


def overlapping_destinations() -> list:
    return [
        pytest.param(lambda: (torch.zeros(2, 1, BS, H, D).expand(-1, NB, -1, -1, -1), None), "kv_cache", id="blocks"),
        pytest.param(lambda: (torch.zeros(1, NB, BS, H, D).expand(2, -1, -1, -1, -1), None), "kv_cache", id="k-is-v"),
        pytest.param(
            lambda: (
                torch.zeros(2 * NB * BS * H * D).as_strided(
                    (2, NB, BS, H, D), (BS * H * D, BS * H * D // 2, H * D, D, 1)
                ),
                None,
            ),
            "kv_cache",
            id="blocks-half-overlap",
        ),
        pytest.param(lambda: (torch.zeros(NB, BS, H, D),) * 2, "share memory", id="k-and-v-one-tensor"),
        pytest.param(
            lambda: (lambda base: (base[:NB], base[1 : NB + 1]))(torch.zeros(NB + 1, BS, H, D)),
            "share memory",
            id="k-and-v-overlap",
        ),
        pytest.param(
            lambda: (torch.zeros(NB, BS, H, D), torch.zeros(1, BS, H, D).expand(NB, -1, -1, -1)),
            "v_cache",
            id="v-blocks",
        ),
    ]


@pytest.mark.parametrize(("make", "named"), overlapping_destinations())
def test_a_destination_whose_elements_share_memory_is_refused_and_left_untouched(store, make, named) -> None:
    kv, v = make()
    before = [t.clone() for t in (kv, v) if t is not None]
    with pytest.raises(kvdump.KvdumpValueError, match=named):
        kvdump.load_cache_store(store, 0, kv, IDS, HASHES, v_cache=v)
    assert all(torch.equal(t, b) for t, b in zip([t for t in (kv, v) if t is not None], before))


def test_k_and_v_interleaved_per_block_are_separate_memory_and_load(store) -> None:
    base = torch.zeros(NB, 2, BS, H, D)  # one [K, V] pair per block, as some engines lay it out
    kvdump.load_cache_store(store, 0, base[:, 0], IDS, HASHES, v_cache=base[:, 1])
    expected = torch.arange(2 * NB * BS * H * D, dtype=torch.float32).reshape(2, NB, BS, H, D)
    assert torch.equal(base[IDS, 0], expected[0, IDS]) and torch.equal(base[IDS, 1], expected[1, IDS])
    combined = base.transpose(0, 1)  # the same memory as one [2, NB, ...] view
    kvdump.load_cache_store(store, 0, combined, IDS, HASHES)
    assert torch.equal(combined[:, IDS], expected[:, IDS])


def test_k_and_v_in_two_layouts_of_one_buffer_load(store) -> None:
    buffer = torch.zeros(2 * NB * BS * H * D)
    half = NB * BS * H * D
    k = buffer[:half].view(NB, BS, H, D)  # token-major
    v = buffer[half:].view(NB, H, BS, D).transpose(1, 2)  # head-major, its own half
    kvdump.load_cache_store(store, 0, k, IDS, HASHES, v_cache=v)
    expected = torch.arange(2 * NB * BS * H * D, dtype=torch.float32).reshape(2, NB, BS, H, D)
    assert torch.equal(k[IDS], expected[0, IDS]) and torch.equal(v[IDS], expected[1, IDS])


def test_k_and_v_over_the_same_memory_from_two_storages_are_refused(store) -> None:
    shared = torch.zeros(2 * NB * BS * H * D).numpy()
    k = torch.from_numpy(shared[: NB * BS * H * D]).view(NB, BS, H, D)
    v = torch.from_numpy(shared[D : D + NB * BS * H * D]).view(NB, BS, H, D)  # overlaps K, another storage
    assert not k.is_set_to(v)
    with pytest.raises(kvdump.KvdumpValueError, match="share memory"):
        kvdump.load_cache_store(store, 0, k, IDS, HASHES, v_cache=v)
    assert not k.any() and not v.any()


def test_a_cache_that_requires_grad_is_refused_under_grad_mode(store) -> None:
    leaf = torch.zeros(2, NB, BS, H, D, requires_grad=True)
    with pytest.raises(kvdump.KvdumpValueError, match="kv_cache requires grad"):
        kvdump.load_cache_store(store, 0, leaf, IDS, HASHES)
    assert not leaf.detach().any()
    with torch.no_grad():
        kvdump.load_cache_store(store, 0, leaf, IDS, HASHES)
    assert leaf.detach().any()


def test_a_load_counts_as_an_in_place_write_for_autograd(store) -> None:
    source = torch.ones(2, NB, BS, H, D, requires_grad=True)
    cache = source * 1.0
    loss = (cache * cache).sum()  # saves `cache` for backward
    version = cache._version
    with torch.no_grad():
        kvdump.load_cache_store(store, 0, cache, IDS, HASHES)
    assert cache._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_an_inference_tensor_is_loaded_into_in_inference_mode(store) -> None:
    with torch.inference_mode():
        cache = torch.zeros(2, NB, BS, H, D)
        kvdump.load_cache_store(store, 0, cache, IDS, HASHES)
    assert cache[:, IDS].any()


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        pytest.param(
            lambda kv: (kv, torch.tensor(IDS).to_sparse(), torch.tensor(HASHES)), {}, "block_ids", id="sparse-ids"
        ),
        pytest.param(
            lambda kv: (kv, torch.tensor(IDS), torch.tensor(HASHES).to_sparse()), {}, "block_hashes", id="sparse-hashes"
        ),
        pytest.param(lambda kv: (kv.to_sparse(), IDS, HASHES), {}, "kv_cache", id="sparse-kv"),
        pytest.param(
            lambda kv: (torch.nested.nested_tensor([kv[0, 0], kv[0, 1]]), IDS, HASHES), {}, "kv_cache", id="nested-kv"
        ),
        pytest.param(
            lambda kv: (kv[0], IDS, HASHES),
            {"v_cache": lambda kv: torch.nested.nested_tensor([kv[1, 0], kv[1, 1]])},
            "v_cache",
            id="nested-v",
        ),
    ],
)
@pytest.mark.parametrize("op", ["write", "load"])
def test_tensors_that_are_not_dense_are_refused_by_name(store, op, args, kwargs, named) -> None:
    kv = torch.zeros(2, NB, BS, H, D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested tensors are a prototype API
        call_args = args(kv)
        call_kwargs = {k: v(kv) for k, v in kwargs.items()}
    if op == "write":
        writer = kvdump.AsyncWriter(kvdump.MemoryStore(capacity_bytes=1 << 20), num_threads=1)
        writer.init()
        with pytest.raises(kvdump.KvdumpValueError, match=f"{named} must be a dense"):
            kvdump.write_cache_store(writer, 0, *call_args, **call_kwargs)
        assert writer.wait_all_done(timeout=30).submitted == 0
        writer.close()
    else:
        with pytest.raises(kvdump.KvdumpValueError, match=f"{named} must be a dense"):
            kvdump.load_cache_store(store, 0, *call_args, **call_kwargs)

"""MemoryStore from Python: the byte-store contract, its full policy, and concurrent writers."""

from __future__ import annotations

import array
import random
import threading

import numpy as np
import pytest

import kvdump
from kvdump import StatusCode


@pytest.fixture
def store() -> kvdump.MemoryStore:
    return kvdump.MemoryStore(capacity_bytes=1 << 20)


def test_is_a_cache_store(store) -> None:
    assert isinstance(store, kvdump.CacheStore)
    assert isinstance(store, kvdump._C.CacheStore)
    assert store.name == "memory"


def test_put_get_exists_remove(store) -> None:
    assert store.get("k") is None
    assert store.exists("k") is False
    store.put("k", b"value")
    assert store.exists("k") is True
    got = store.get("k")
    assert isinstance(got, bytes)
    assert got == b"value"
    assert store.remove("k") is True
    assert store.exists("k") is False
    assert store.get("k") is None
    assert store.remove("k") is False


def test_get_of_missing_key_is_none(store) -> None:
    store.put("present", b"x")
    assert store.get("absent") is None
    assert store.get("presen") is None
    assert store.get("present ") is None


def test_overwrite_replaces_value_and_accounting(store) -> None:
    store.put("k", b"a" * 10)
    store.put("k", b"b" * 3)
    assert store.get("k") == b"bbb"
    s = store.stats()
    assert (s["entries"], s["used_bytes"]) == (1, 3)


def test_values_are_copied(store) -> None:
    buf = bytearray(b"original")
    store.put("k", buf)
    buf[:] = b"mutated!"
    assert store.get("k") == b"original"
    got = store.get("k")
    assert store.get("k") == got  # a get returns a copy the caller may keep


@pytest.mark.parametrize(
    "make",
    [
        lambda raw: bytes(raw),
        lambda raw: bytearray(raw),
        lambda raw: memoryview(raw),
        lambda raw: memoryview(bytearray(raw)),
        lambda raw: memoryview(b"xx" + raw + b"yy")[2:-2],  # contiguous slice
        lambda raw: np.frombuffer(raw, dtype=np.uint8).copy(),
        lambda raw: array.array("B", raw),
    ],
    ids=["bytes", "bytearray", "memoryview", "memoryview-bytearray", "memoryview-slice", "numpy", "array"],
)
def test_buffer_inputs(store, make) -> None:
    raw = bytes(random.Random(1).randbytes(257))
    store.put("k", make(raw))
    assert store.get("k") == raw


def test_multibyte_items_store_all_bytes(store) -> None:
    a = np.arange(100, dtype=np.float32)
    store.put("f32", a)
    assert store.get("f32") == a.tobytes()
    assert store.stats()["used_bytes"] == a.nbytes
    m = np.arange(12, dtype=np.int64).reshape(3, 4)
    store.put("2d", m)
    assert store.get("2d") == m.tobytes()


def test_empty_value(store) -> None:
    store.put("empty", b"")
    assert store.exists("empty")
    assert store.get("empty") == b""


def test_non_contiguous_memoryview_is_rejected(store) -> None:
    strided = memoryview(bytes(range(20)))[::2]
    assert not strided.contiguous
    with pytest.raises(kvdump.KvdumpValueError) as info:
        store.put("k", strided)
    assert isinstance(info.value, ValueError)
    assert info.value.code is StatusCode.INVALID_ARGUMENT
    assert info.value.key == "k"
    assert store.get("k") is None
    assert store.stats()["entries"] == 0


def test_non_contiguous_numpy_is_rejected(store) -> None:
    with pytest.raises(kvdump.KvdumpValueError):
        store.put("k", np.arange(16, dtype=np.uint8).reshape(4, 4).T)
    assert not store.exists("k")


@pytest.mark.parametrize("value", ["text", 42, None, [1, 2]])
def test_non_buffer_values_are_type_errors(store, value) -> None:
    with pytest.raises(TypeError):
        store.put("k", value)


def test_empty_key_is_rejected(store) -> None:
    with pytest.raises(kvdump.KvdumpValueError):
        store.put("", b"x")


def test_refusing_store_fails_the_put_and_evicts_nothing() -> None:
    store = kvdump.MemoryStore(capacity_bytes=100, eviction="refuse")
    store.put("a", b"a" * 60)
    store.put("b", b"b" * 40)  # exactly full
    with pytest.raises(kvdump.StoreFullError) as info:
        store.put("c", b"c")
    e = info.value
    assert isinstance(e, kvdump.StoreError)
    assert e.code is StatusCode.STORE_FULL
    assert e.key == "c"
    assert store.get("a") == b"a" * 60
    assert store.get("b") == b"b" * 40
    assert store.get("c") is None
    s = store.stats()
    assert (s["used_bytes"], s["entries"], s["rejected_full"], s["evictions"]) == (100, 2, 1, 0)
    assert s["eviction"] == "refuse"

    # Removing makes room again.
    assert store.remove("a")
    store.put("c", b"c" * 60)
    assert store.get("c") == b"c" * 60
    assert store.stats()["used_bytes"] == 100


def test_evicting_store_makes_room_from_the_least_recently_used() -> None:
    store = kvdump.MemoryStore(capacity_bytes=4096, slab_bytes=1024, high_watermark=1.0, low_watermark=1.0)
    for k in "abcd":
        store.put(k, k.encode() * 1000)
    assert store.get("a") == b"a" * 1000  # "b" is now the least recently used
    store.put("e", b"e" * 1000)
    assert [store.exists(k) for k in "abcde"] == [True, False, True, True, True]
    s = store.stats()
    assert (s["evictions"], s["rejected_full"], s["eviction"]) == (1, 0, "evict")
    assert s["hits"] >= 1


def test_overwrite_that_fits_succeeds_in_a_nearly_full_store() -> None:
    store = kvdump.MemoryStore(capacity_bytes=100, eviction="refuse")
    store.put("a", b"x" * 60)
    store.put("a", b"y" * 60)  # replaces 60 bytes with 60 bytes: the result fits
    assert store.get("a") == b"y" * 60
    assert store.stats()["used_bytes"] == 60


def test_value_larger_than_capacity() -> None:
    store = kvdump.MemoryStore(capacity_bytes=10)
    with pytest.raises(kvdump.StoreFullError) as info:
        store.put("big", b"x" * 11)
    assert info.value.key == "big"
    assert store.stats()["entries"] == 0
    assert store.stats()["used_bytes"] == 0


def test_value_larger_than_a_slab_names_the_setting() -> None:
    store = kvdump.MemoryStore(capacity_bytes=1 << 20, slab_bytes=4096)
    with pytest.raises(kvdump.KvdumpValueError, match="slab_bytes") as info:
        store.put("big", b"x" * 5000)
    assert info.value.key == "big"


def test_stats_track_puts_and_removes() -> None:
    store = kvdump.MemoryStore(capacity_bytes=1000)
    s = store.stats()
    assert (s["capacity_bytes"], s["used_bytes"], s["entries"], s["rejected_full"]) == (1000, 0, 0, 0)
    assert {"hits", "misses", "evictions", "reclaimed", "leased", "eviction", "high_watermark", "low_watermark"} <= set(
        s
    )
    for i in range(10):
        store.put(f"k{i}", bytes(i + 1))
    assert store.stats()["entries"] == 10
    assert store.stats()["used_bytes"] == sum(range(1, 11))
    for i in range(0, 10, 2):
        assert store.remove(f"k{i}")
    s = store.stats()
    assert s["entries"] == 5
    assert s["used_bytes"] == sum(i + 1 for i in range(1, 10, 2))
    assert store.get("k1") is not None and store.get("k0") is None
    assert (store.stats()["hits"], store.stats()["misses"]) == (1, 1)


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"eviction": "lru"}, "eviction"),
        ({"high_watermark": 0.5, "low_watermark": 0.7}, "low_watermark"),
        ({"high_watermark": 1.5}, "high_watermark"),
        ({"low_watermark": 0.0}, "low_watermark"),
        ({"slab_bytes": 8}, "slab_bytes"),
        ({"slab_bytes": -1}, "slab_bytes"),
        ({"pin_memory": "tpu9"}, "pin_memory"),
    ],
)
def test_bad_policy_arguments_are_refused_naming_them(kwargs, names) -> None:
    with pytest.raises(kvdump.KvdumpValueError, match=names):
        kvdump.MemoryStore(capacity_bytes=1 << 20, **kwargs)


def test_keys_are_arbitrary_strings(store) -> None:
    keys = ["ns/0/1/abcdef", "ünïcödé", "with space", "a" * 1000, "x\ty"]
    for i, k in enumerate(keys):
        store.put(k, bytes([i]) * 3)
    for i, k in enumerate(keys):
        assert store.get(k) == bytes([i]) * 3


@pytest.mark.timeout(120)
def test_concurrent_puts_from_writer_tasks() -> None:
    # Values of 64 sizes: small slabs, so every size class gets its own without evicting another's.
    store = kvdump.MemoryStore(capacity_bytes=64 << 20, slab_bytes=64 << 10)
    rng = random.Random(7)
    values = {f"req-{r}/layer-{layer}": rng.randbytes(rng.randrange(1, 4096)) for r in range(8) for layer in range(32)}
    writer = kvdump.AsyncWriter(store, num_threads=4, queue_capacity=16)
    try:
        for _ in range(2):  # a second cycle overwrites every key with the same values
            with writer.cycle(timeout=30):
                for key, value in values.items():
                    writer.submit(lambda k=key, v=value: store.put(k, v), label=key)
        s = writer.stats()
        assert (s["completed"], s["failed"]) == (2 * len(values), 0)
    finally:
        writer.close()
    for key, value in values.items():
        assert store.get(key) == value
    st = store.stats()
    assert st["entries"] == len(values)
    assert st["used_bytes"] == sum(map(len, values.values()))
    assert st["rejected_full"] == 0


@pytest.mark.timeout(120)
def test_concurrent_put_get_remove_from_python_threads() -> None:
    store = kvdump.MemoryStore(capacity_bytes=16 << 20)
    errors: list[str] = []

    def worker(t: int) -> None:
        rng = random.Random(t)
        for i in range(300):
            key = f"t{t}/{i}"
            value = rng.randbytes(rng.randrange(0, 512))
            store.put(key, value)
            if store.get(key) != value:
                errors.append(f"{key}: read back differs")
            if i % 3 == 0 and not store.remove(key):
                errors.append(f"{key}: remove failed")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads)
    assert errors == []
    assert store.stats()["entries"] == 6 * 200

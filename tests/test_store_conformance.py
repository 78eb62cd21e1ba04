"""The one conformance suite every store passes: native (memory, file, delayed), written in Python
(through the PythonStore trampoline) and Mooncake against a live master.

Every call goes through the C++ interface, ``kvdump.CacheStore.<method>(store, ...)``, exactly the
way the writer's worker threads reach a store, so a Python store is tested through its trampoline
and not only as plain Python. The GoogleTest suite (cpp/tests/store_conformance.cc) holds the same
rules for the native stores from C++."""

from __future__ import annotations

import threading
import uuid

import pytest
import torch

import kvdump
from support import FIRST_WRITER_WINS, NO_EMPTY_VALUES, READS_TAKE_LEASES, STORE_KINDS

C = kvdump.CacheStore

pytestmark = pytest.mark.parametrize("kind", STORE_KINDS)


@pytest.fixture
def prefix() -> str:
    # Mooncake's store is shared by the session; unique keys keep tests apart.
    return f"conf-{uuid.uuid4().hex[:12]}/"


def pattern(size: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(size))


def test_put_then_get_returns_the_same_bytes(store_factory, kind: str, prefix: str) -> None:
    store = store_factory(kind)
    for size in (1, 4096, (1 << 20) + 3):
        value = pattern(size, size)
        C.put(store, f"{prefix}v{size}", value)
        assert C.get(store, f"{prefix}v{size}") == value


def test_missing_key_is_absent_everywhere_and_named(store_factory, kind: str, prefix: str) -> None:
    store = store_factory(kind)
    key = f"{prefix}missing"
    assert C.get(store, key) is None
    assert C.exists(store, key) is False
    assert C.remove(store, key) is False
    with pytest.raises(kvdump.KeyNotFoundError) as info:
        C.get_into(store, key, bytearray(16))
    assert info.value.key == key
    assert info.value.code == kvdump.StatusCode.NOT_FOUND


def test_exists_and_remove(store_factory, kind: str, prefix: str) -> None:
    store = store_factory(kind)
    key = f"{prefix}r"
    C.put(store, key, b"abc")
    assert C.exists(store, key)
    if kind in READS_TAKE_LEASES:
        # A Mooncake read (exists included) takes a lease that blocks removal for a while: the
        # refusal is typed, names the key and leaves the value whole. A key nobody read removes.
        with pytest.raises(kvdump.LeaseHeldError) as info:
            C.remove(store, key)
        assert info.value.key == key
        assert C.get(store, key) == b"abc"
        key = f"{prefix}r-unread"
        C.put(store, key, b"abc")
    assert C.remove(store, key) is True
    assert not C.exists(store, key)
    assert C.get(store, key) is None
    assert C.remove(store, key) is False


def test_overwrite_replaces_the_value(store_factory, kind: str, prefix: str) -> None:
    store = store_factory(kind)
    key = f"{prefix}o"
    C.put(store, key, pattern(5000, 1))
    C.put(store, key, pattern(300, 2))
    if kind in FIRST_WRITER_WINS:
        assert C.get(store, key) == pattern(5000, 1)
        return
    assert C.get(store, key) == pattern(300, 2)
    C.put(store, key, pattern(9000, 3))
    assert C.get(store, key) == pattern(9000, 3)


def test_empty_value_round_trips_or_is_refused_cleanly(store_factory, kind: str, prefix: str) -> None:
    store = store_factory(kind)
    key = f"{prefix}empty"
    if kind in NO_EMPTY_VALUES:
        # Mooncake cannot hold empty values; the refusal is typed and stores nothing.
        with pytest.raises(kvdump.UnsupportedError) as info:
            C.put(store, key, b"")
        assert info.value.key == key
        assert not C.exists(store, key)
        return
    C.put(store, key, b"")
    assert C.exists(store, key)
    assert C.get(store, key) == b""
    assert C.get_into(store, key, bytearray(4)) == 0


def test_get_into_copies_and_refuses_small_buffers(store_factory, kind: str, prefix: str) -> None:
    store = store_factory(kind)
    key = f"{prefix}gi"
    value = pattern(1000, 9)
    C.put(store, key, value)
    big = bytearray(1500)
    assert C.get_into(store, key, big) == 1000
    assert bytes(big[:1000]) == value
    with pytest.raises(kvdump.KvdumpValueError) as info:
        C.get_into(store, key, bytearray(999))
    assert info.value.code == kvdump.StatusCode.TOO_LARGE
    assert info.value.key == key
    assert C.get(store, key) == value  # the refused read changed nothing


def test_batch_calls_return_one_result_per_key_in_order(store_factory, kind: str, prefix: str) -> None:
    store = store_factory(kind)
    keys = [f"{prefix}b{i}" for i in range(6)]
    values = [pattern(100 + i * 37, i) for i in range(6)]
    C.batch_put(store, keys, values)
    assert [C.get(store, k) for k in keys] == values
    assert C.batch_exists(store, keys + [f"{prefix}absent"]) == [True] * 6 + [False]


def test_concurrent_writers_and_readers_see_whole_values(store_factory, kind: str, prefix: str) -> None:
    store = store_factory(kind)
    torn: list[str] = []
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(20):
                key = f"{prefix}c{i}"
                # Every writer's value is one repeated byte of its own length, so a torn read shows.
                C.put(store, key, bytes([t + 1]) * (512 + t))
                got = C.get(store, key)
                if got is not None and (len(got) != 511 + got[0] or len(set(got)) != 1):
                    torn.append(key)
        except BaseException as exc:  # noqa: BLE001  (reported below, in the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads)
    assert errors == []
    assert torn == []
    assert all(C.exists(store, f"{prefix}c{i}") for i in range(20))


def test_keys_with_slashes_and_dots_are_opaque(store_factory, kind: str, prefix: str) -> None:
    store = store_factory(kind)
    key = f"{prefix}model.v1/tp0-of-2/0123456789abcdef/layer.07"
    C.put(store, key, b"v")
    assert C.get(store, key) == b"v"
    assert not C.exists(store, f"{prefix}model.v1/tp0-of-2")


def test_keys_naming_directories_on_a_filesystem_are_ordinary_keys(store_factory, kind: str, prefix: str) -> None:
    store = store_factory(kind)
    keys = [f"{prefix}{name}" for name in (".", "..", "...", "./x", "../x")]
    for i, key in enumerate(keys):
        C.put(store, key, bytes([i]) * 4)
    for i, key in enumerate(keys):
        assert C.get(store, key) == bytes([i]) * 4, key
        assert C.exists(store, key), key
    assert not C.exists(store, f"{prefix}x")


def test_empty_key_is_invalid(store_factory, kind: str) -> None:
    store = store_factory(kind)
    with pytest.raises(kvdump.KvdumpValueError, match="empty key"):
        C.put(store, "", b"x")
    with pytest.raises(kvdump.KvdumpValueError, match="empty key"):
        C.get_into(store, "", bytearray(4))


def test_writer_round_trip_commits_and_loads(store_factory, kind: str, prefix: str) -> None:
    store = store_factory(kind)
    namespace = prefix.rstrip("/")
    layers, blocks = 4, 6
    torch.manual_seed(0)
    kv = [torch.randn(2, 8, 16, 2, 32) for _ in range(layers)]
    ids = [5, 1, 7, 0, 3, 2]
    hashes = [1000 + i for i in range(blocks)]
    writer = kvdump.AsyncWriter(store, num_threads=2, key_space=kvdump.KeySpace(namespace), staging_bytes=8 << 20)
    try:
        with writer.cycle():
            for layer in range(layers):
                kvdump.write_cache_store(writer, layer, kv[layer], ids, hashes, request="req-0")
    finally:
        writer.close()
    assert kvdump.lookup(store, hashes, key_space=kvdump.KeySpace(namespace), num_layers=layers) == blocks
    loader = kvdump.KVLoader(store, key_space=kvdump.KeySpace(namespace), num_threads=2)
    try:
        for layer in range(layers):
            out = torch.zeros_like(kv[layer])
            loader.load(layer, out, ids, hashes)
            assert torch.equal(out[:, ids], kv[layer][:, ids])
    finally:
        loader.close()

"""The native stores seen from Python, opened directly and by URL, against one shared set of checks."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest

import kvdump


def _stores(tmp_path: Path) -> dict[str, kvdump.CacheStore]:
    return {
        "memory": kvdump.MemoryStore(1 << 20),
        "memory-url": kvdump.open_store("memory://?capacity_bytes=1048576&eviction=refuse"),
        "file": kvdump.FileStore(str(tmp_path / "direct")),
        "file-url": kvdump.open_store(f"file://{tmp_path / 'by-url'}?fsync=true"),
        "delayed": kvdump.DelayedStore(kvdump.MemoryStore(1 << 20), put_delay=0.001),
    }


@pytest.mark.parametrize("name", ["memory", "memory-url", "file", "file-url", "delayed"])
def test_store_roundtrip_exists_remove(tmp_path: Path, name: str) -> None:
    store = _stores(tmp_path)[name]
    payload = bytes(range(256)) * 5
    store.put("ns/tp0of1/00ff/L0", payload)
    assert store.get("ns/tp0of1/00ff/L0") == payload
    assert store.exists("ns/tp0of1/00ff/L0")
    assert store.get("ns/tp0of1/00ff/L1") is None
    store.put("ns/tp0of1/00ff/L0", bytearray(b"new"))
    assert store.get("ns/tp0of1/00ff/L0") == b"new"
    assert store.remove("ns/tp0of1/00ff/L0") is True
    assert store.remove("ns/tp0of1/00ff/L0") is False
    assert not store.exists("ns/tp0of1/00ff/L0")


def test_open_store_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(kvdump.UnsupportedError, match="no store for scheme 'nosuch'"):
        kvdump.open_store("nosuch://x")
    with pytest.raises(kvdump.KvdumpValueError, match="capacity"):
        kvdump.open_store("memory://?capacity=5")
    with pytest.raises(kvdump.KvdumpValueError, match="fsync"):
        kvdump.open_store(f"file://{tmp_path}?fsync=maybe")
    with pytest.raises(kvdump.KvdumpValueError, match="scheme"):
        kvdump.open_store(str(tmp_path))


def test_outlives_process_says_which_stores_another_process_can_read(tmp_path: Path) -> None:
    from kvdump.stores import outlives_process

    assert outlives_process("memory://") is False
    assert outlives_process("memory://?capacity_bytes=1024") is False
    assert outlives_process(f"file://{tmp_path}") is True
    assert not (tmp_path / "never").exists()
    assert outlives_process(f"file://{tmp_path}/never") is True  # opens nothing
    # Nothing is contacted either: no master listens here.
    assert outlives_process("mooncake://127.0.0.1:1?metadata_server=http://127.0.0.1:1/metadata") is True
    assert not (tmp_path / "never").exists()
    with pytest.raises(kvdump.UnsupportedError, match="no store for scheme 'nosuch'"):
        outlives_process("nosuch://x")
    with pytest.raises(kvdump.KvdumpValueError, match="scheme"):
        outlives_process(str(tmp_path))


def _writer_process(root: str, worker: int, count: int) -> None:
    store = kvdump.FileStore(root)
    for i in range(count):
        # Every value is one repeated byte, so a torn read would show mixed bytes.
        store.put(f"shared/{i}", bytes([worker + 1]) * (4096 + worker))


def test_file_store_many_processes_never_expose_partial_values(tmp_path: Path) -> None:
    root = str(tmp_path / "shared-root")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer_process, args=(root, w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    reader = kvdump.FileStore(root)
    torn = 0
    while any(p.is_alive() for p in procs):
        for i in range(40):
            value = reader.get(f"shared/{i}")
            if value is not None and (len(value) != 4096 + value[0] - 1 or len(set(value)) != 1):
                torn += 1
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert torn == 0
    assert all(reader.exists(f"shared/{i}") for i in range(40))
    leftovers = [f for _, _, files in os.walk(root) for f in files if f.startswith(".tmp.")]
    assert leftovers == []


@pytest.mark.parametrize("delay", [-0.001, float("inf"), float("nan")])
def test_delayed_store_refuses_delays_that_are_not_finite_seconds(delay: float) -> None:
    with pytest.raises(kvdump.KvdumpValueError, match="put_delay must be a finite number of seconds"):
        kvdump.DelayedStore(kvdump.MemoryStore(1 << 20), put_delay=delay)
    with pytest.raises(kvdump.KvdumpValueError, match="get_delay must be a finite number of seconds"):
        kvdump.DelayedStore(kvdump.MemoryStore(1 << 20), get_delay=delay)


def test_a_file_store_root_may_be_a_path_and_bad_arguments_are_named(tmp_path) -> None:
    store = kvdump.FileStore(tmp_path / "root")  # an os.PathLike, as open() takes
    assert store.root == str(tmp_path / "root")
    for kwargs, error, named in [
        ({"root": None}, kvdump.KvdumpTypeError, "root"),
        ({"root": str(tmp_path).encode()}, kvdump.KvdumpTypeError, "root"),
        ({"root": str(tmp_path / "a\x00b")}, kvdump.KvdumpValueError, "root must not contain a NUL"),
        ({"root": str(tmp_path), "fsync": "no"}, kvdump.KvdumpTypeError, "fsync"),
        ({"root": str(tmp_path), "fsync": 1}, kvdump.KvdumpTypeError, "fsync"),
    ]:
        with pytest.raises(error, match=named):
            kvdump.FileStore(**kwargs)
    assert not (tmp_path / "a").exists()  # nothing made for a refused root


@pytest.mark.parametrize(
    ("make", "named"),
    [
        pytest.param(lambda: kvdump.MemoryStore(capacity_bytes=1e6), "capacity_bytes", id="capacity-float"),
        pytest.param(lambda: kvdump.MemoryStore(capacity_bytes=True), "capacity_bytes", id="capacity-bool"),
        pytest.param(lambda: kvdump.MemoryStore(1 << 20, eviction=None), "eviction", id="eviction-none"),
        pytest.param(lambda: kvdump.MemoryStore(1 << 20, high_watermark="0.9"), "high_watermark", id="watermark-str"),
        pytest.param(lambda: kvdump.MemoryStore(1 << 20, pin_memory=True), "pin_memory", id="pin-memory-bool"),
        pytest.param(lambda: kvdump.DelayedStore("x"), "inner", id="delayed-inner-str"),
        pytest.param(
            lambda: kvdump.DelayedStore(kvdump.MemoryStore(1 << 20), put_delay="1"), "put_delay", id="delay-str"
        ),
    ],
)
def test_native_store_arguments_of_the_wrong_type_are_named(make, named: str) -> None:
    with pytest.raises(kvdump.KvdumpTypeError, match=named):
        make()

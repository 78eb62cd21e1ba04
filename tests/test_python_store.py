"""Stores written in Python (kvdump.PythonStore): error codes across the trampoline, lent buffers,
lifetime, buffer registration and plug-in registration by URL scheme."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import kvdump
import numpy as np
import pytest
import torch
from dict_store import DictStore

C = kvdump.CacheStore
TESTS = Path(__file__).parent


def write_one_cycle(writer: kvdump.AsyncWriter, layers: int = 2, request: str = "req") -> torch.Tensor:
    kv = torch.randn(2, 4, 8, 2, 16)
    with writer.cycle():
        for layer in range(layers):
            kvdump.write_cache_store(writer, layer, kv, [0, 1, 2], [7, 8, 9], request=request)
    return kv


def test_store_stays_alive_while_the_writer_holds_it(make_writer) -> None:
    store = DictStore()
    writer = make_writer(store=store)
    del store
    gc.collect()
    write_one_cycle(writer)  # the workers still reach the Python object's methods
    assert kvdump.lookup(writer._store, [7, 8, 9], num_layers=2) == 3


def test_block_puts_run_on_worker_threads_not_the_caller(make_writer) -> None:
    threads: set[int] = set()

    class Recording(DictStore):
        def put(self, key: str, value: memoryview) -> None:
            if not key.endswith("/commit"):  # commit records are published by the caller, after the barrier
                threads.add(threading.get_ident())
            super().put(key, value)

    writer = make_writer(store=Recording())
    write_one_cycle(writer)
    assert threads and threading.get_ident() not in threads


def test_a_kvdump_error_keeps_its_code_key_and_is_chained(make_writer) -> None:
    store = DictStore(capacity_bytes=100)  # smaller than one block record
    writer = make_writer(store=store)
    with pytest.raises(kvdump.WriteError) as info:
        write_one_cycle(writer, request="req-full")
    err = info.value
    assert err.code == kvdump.StatusCode.STORE_FULL
    assert err.request == "req-full"
    assert err.key.startswith("kvdump/tp0of1/")
    assert isinstance(err.__cause__, kvdump.StoreFullError)
    assert kvdump.lookup(store, [7, 8, 9]) == 0  # nothing committed
    assert writer.state == "idle"


def test_any_other_exception_is_an_io_error_naming_its_type(make_writer) -> None:
    class Broken(DictStore):
        def put(self, key: str, value: memoryview) -> None:
            raise ConnectionResetError("peer went away")

    writer = make_writer(store=Broken())
    with pytest.raises(kvdump.WriteError) as info:
        write_one_cycle(writer)
    assert info.value.code == kvdump.StatusCode.IO_ERROR
    assert "ConnectionResetError: peer went away" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionResetError)


def test_lent_views_are_revoked_after_the_call() -> None:
    class Keeper(DictStore):
        kept: list[memoryview] = []

        def put(self, key: str, value: memoryview) -> None:
            self.kept.append(value)  # wrong: the view is only lent
            super().put(key, value)

    store = Keeper()
    C.put(store, "k", b"abc")
    assert C.get(store, "k") == b"abc"
    with pytest.raises(ValueError, match="released"):
        bytes(store.kept[0])


def test_keeping_an_export_of_a_lent_view_is_reported() -> None:
    class Exporter(DictStore):
        arrays: list[np.ndarray] = []

        def put(self, key: str, value: memoryview) -> None:
            self.arrays.append(np.frombuffer(value, dtype=np.uint8))  # still reads the lent memory
            super().put(key, value)

    with pytest.raises(kvdump.KvdumpError, match="kept lent memory") as info:
        C.put(Exporter(), "k", b"abc")
    assert info.value.code == kvdump.StatusCode.INTERNAL
    assert info.value.key == "k"


def test_missing_required_method_is_unsupported() -> None:
    class PutOnly(kvdump.PythonStore):
        def __init__(self) -> None:
            super().__init__("put-only")

        def put(self, key: str, value: memoryview) -> None:
            pass

    store = PutOnly()
    C.put(store, "k", b"x")
    with pytest.raises(kvdump.UnsupportedError, match="does not implement get"):
        C.get(store, "k")
    assert store.name == "put-only"


def test_batch_put_reports_per_key_results() -> None:
    class HalfFull(DictStore):
        def batch_put(self, keys: list[str], values: list[memoryview]) -> list[Exception | None]:
            results: list[Exception | None] = []
            for i, (key, value) in enumerate(zip(keys, values)):
                if i % 2:
                    results.append(kvdump.StoreFullError("no room", key=key))
                else:
                    self.put(key, value)
                    results.append(None)
            return results

    store = HalfFull()
    with pytest.raises(kvdump.StoreFullError) as info:
        C.batch_put(store, ["a", "b", "c"], [b"1", b"2", b"3"])
    assert info.value.key == "b"
    assert C.get(store, "a") == b"1" and C.get(store, "b") is None


def test_a_wrong_number_of_batch_results_is_an_internal_error() -> None:
    class Short(DictStore):
        def batch_put(self, keys: list[str], values: list[memoryview]) -> list[None]:
            return [None]

    with pytest.raises(kvdump.KvdumpError, match="returned 1 results for 2 keys") as info:
        C.batch_put(Short(), ["a", "b"], [b"1", b"2"])
    assert info.value.code == kvdump.StatusCode.INTERNAL


def test_get_into_that_claims_more_bytes_than_the_buffer_is_refused() -> None:
    class Liar(DictStore):
        def get_into(self, key: str, buffer: memoryview) -> int:
            return buffer.nbytes + 1

    with pytest.raises(kvdump.KvdumpError, match="reported 9 bytes read into a 8-byte buffer"):
        C.get_into(Liar(), "k", bytearray(8))


def test_staging_buffers_are_registered_before_use_and_unregistered_on_close(make_writer) -> None:
    class Registering(DictStore):
        def __init__(self) -> None:
            super().__init__()
            self.live: dict[int, int] = {}
            self.lent_outside: list[int] = []

        def register_buffer(self, address: int, size: int) -> None:
            self.live[address] = size

        def unregister_buffer(self, address: int) -> None:
            del self.live[address]

        def put(self, key: str, value: memoryview) -> None:
            address = kvdump._C.buffer_address(value)
            if not key.endswith("/commit") and not any(a <= address and address + value.nbytes <= a + n for a, n in self.live.items()):
                self.lent_outside.append(address)
            super().put(key, value)

    store = Registering()
    writer = make_writer(store=store)
    write_one_cycle(writer)
    assert store.live  # staging stays registered while the writer lives
    assert store.lent_outside == []  # every block was lent straight from registered staging
    writer.close()
    assert store.live == {}


def test_a_failing_registration_fails_the_task_not_the_process(make_writer) -> None:
    class Refusing(DictStore):
        def register_buffer(self, address: int, size: int) -> None:
            raise kvdump.StoreError("cannot pin")

    writer = make_writer(store=Refusing())
    with pytest.raises(kvdump.WriteError, match="cannot pin") as info:
        write_one_cycle(writer)
    assert info.value.code == kvdump.StatusCode.IO_ERROR


def test_a_plugin_registered_under_a_url_scheme_opens_and_serves_a_writer(tmp_path: Path) -> None:
    # A real installed distribution's metadata, minus the install: a dist-info with an entry point.
    dist = tmp_path / "kvdump_dict_store-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kvdump-dict-store\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[kvdump.stores]\ndict = dict_store:open_dict_store\n")
    script = textwrap.dedent(
        """
        import kvdump, torch
        from kvdump.stores import registered_schemes
        assert "dict" in registered_schemes(), registered_schemes()
        store = kvdump.open_store("dict://")
        assert type(store).__name__ == "DictStore"
        writer = kvdump.AsyncWriter(store, num_threads=2)
        kv = torch.randn(2, 3, 4, 1, 8)
        with writer.cycle():
            kvdump.write_cache_store(writer, 0, kv, [0, 1, 2], [1, 2, 3])
        writer.close()
        print(kvdump.lookup(store, [1, 2, 3], num_layers=1))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(TESTS)]))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"

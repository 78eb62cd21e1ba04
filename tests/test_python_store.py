"""Stores written in Python (kvdump.PythonStore): error codes across the trampoline, lent buffers,
lifetime, buffer registration and plug-in registration by URL scheme."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import kvdump
from kvdump.stores.dict_store import DictStore

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
            if not key.endswith("/commit") and not any(
                a <= address and address + value.nbytes <= a + n for a, n in self.live.items()
            ):
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
    (dist / "entry_points.txt").write_text("[kvdump.stores]\ndict = kvdump.stores.dict_store:open_dict_store\n")
    script = textwrap.dedent(
        """
        import kvdump, torch
        from kvdump.stores import outlives_process, registered_schemes
        assert "dict" in registered_schemes(), registered_schemes()
        assert outlives_process("dict://") is False  # the factory declares itself in-process
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


# --- what a Python store's results mean -----------------------------------------------------------


class Refusing(DictStore):
    """Stores nothing and says so the documented way: put() returns False."""

    def put(self, key: str, value: memoryview) -> bool:
        return False


def test_put_returning_false_is_a_failed_put(make_writer) -> None:
    store = Refusing()
    with pytest.raises(kvdump.StoreError, match=r"'dict' put\(\) returned False") as info:
        C.put(store, "k", b"x")
    assert info.value.code == kvdump.StatusCode.IO_ERROR
    assert info.value.key == "k"

    writer = make_writer(store=store)
    with pytest.raises(kvdump.WriteError, match=r"put\(\) returned False") as info:
        write_one_cycle(writer)
    assert info.value.code == kvdump.StatusCode.IO_ERROR
    assert info.value.key.startswith("kvdump/tp0of1/")
    assert "3 of 3 block(s) failed" in str(info.value)
    assert kvdump.lookup(store, [7, 8, 9]) == 0


@pytest.mark.parametrize("returned", [None, True])
def test_put_returning_none_or_true_is_success(returned: object) -> None:
    class Confirming(DictStore):
        def put(self, key: str, value: memoryview) -> object:
            super().put(key, value)
            return returned

    store = Confirming()
    C.put(store, "k", b"x")
    assert C.get(store, "k") == b"x"


@pytest.mark.parametrize(("returned", "type_name"), [(1, "int"), ("ok", "str"), (0, "int")])
def test_put_returning_anything_else_is_an_internal_error(returned: object, type_name: str) -> None:
    class Odd(DictStore):
        def put(self, key: str, value: memoryview) -> object:
            super().put(key, value)
            return returned

    with pytest.raises(kvdump.KvdumpError, match=rf"Python store 'dict' put\(\) returned {type_name}") as info:
        C.put(Odd(), "k", b"x")
    assert info.value.code == kvdump.StatusCode.INTERNAL
    assert info.value.key == "k"


def batch_store(result: Callable[[list[str]], object]) -> DictStore:
    """A DictStore whose batch_put stores every value, then returns ``result(keys)``."""

    class Batching(DictStore):
        def batch_put(self, keys: list[str], values: list[memoryview]) -> object:
            for key, value in zip(keys, values):
                self.put(key, value)
            return result(keys)

    return Batching()


@pytest.mark.parametrize(
    ("result", "type_name"),
    [
        (lambda keys: [True] * len(keys), "bool"),
        (lambda keys: [1] * len(keys), "int"),
        (lambda keys: ["ok"] * len(keys), "str"),
    ],
    ids=["True", "1", "str"],
)
def test_a_batch_item_other_than_none_false_or_an_exception_is_internal(
    make_writer, result: Callable[[list[str]], object], type_name: str
) -> None:
    store = batch_store(result)
    with pytest.raises(kvdump.KvdumpError, match=rf"batch_put\(\) returned {type_name} for a key") as info:
        C.batch_put(store, ["a", "b"], [b"1", b"2"])
    assert info.value.code == kvdump.StatusCode.INTERNAL
    assert info.value.key == "a"
    assert info.value.__cause__ is None  # no Python object rides along to be chained

    writer = make_writer(store=store)
    with pytest.raises(kvdump.WriteError, match=rf"returned {type_name} for a key") as info:
        write_one_cycle(writer)
    assert info.value.code == kvdump.StatusCode.INTERNAL
    assert "3 of 3 block(s) failed" in str(info.value)
    assert info.value.__cause__ is None


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        (lambda keys: 3, r"returned int; expected a list with one result per key"),
        (lambda keys: [None], r"returned 1 results for 3 keys"),
        (lambda keys: [None] * (len(keys) + 1), r"returned 4 results for 3 keys"),
        (lambda keys: {k: None for k in keys}, r"returned dict; expected a list"),
    ],
    ids=["int", "short", "long", "dict"],
)
def test_a_batch_put_result_that_is_not_one_item_per_key_fails_every_key(
    make_writer, result: Callable[[list[str]], object], problem: str
) -> None:
    writer = make_writer(store=batch_store(result))
    with pytest.raises(kvdump.WriteError, match=problem) as info:
        write_one_cycle(writer, layers=1)
    assert info.value.code == kvdump.StatusCode.INTERNAL
    assert "3 of 3 block(s) failed" in str(info.value)
    assert info.value.__cause__ is None


def test_a_malformed_payload_never_replaces_the_real_error() -> None:
    # Whatever a store's result carries, the error raised is the store's failure, never a TypeError
    # about what can be chained as a cause.
    store = batch_store(lambda keys: [object() for _ in keys])
    with pytest.raises(kvdump.KvdumpError, match=r"returned object for a key") as info:
        C.batch_put(store, ["a", "b"], [b"1", b"2"])
    assert info.value.__cause__ is None


class PartlyFailing(DictStore):
    """batch_put stores all but the second value of each batch and reports that one through its
    result, the convention MooncakeStore uses: ``failure(key)`` is False or an exception."""

    def __init__(self, failure: Callable[[str], object] = lambda key: False) -> None:
        super().__init__()
        self.failure = failure

    def batch_put(self, keys: list[str], values: list[memoryview]) -> list[object]:
        results: list[object] = []
        for i, (key, value) in enumerate(zip(keys, values)):
            if i == 1:
                results.append(self.failure(key))
            else:
                self.put(key, value)
                results.append(None)
        return results


def test_batch_put_failures_reported_per_item_raise_when_called_from_python() -> None:
    # Code written against the CacheStore interface calls store.batch_put(...) (commit records do)
    # and must see the failure whichever way it calls.
    store = PartlyFailing()
    for batch_put in (store.batch_put, lambda keys, values: C.batch_put(store, keys, values)):
        with pytest.raises(kvdump.StoreError, match=r"'dict' batch_put\(\) returned False for this key") as info:
            batch_put(["a", "b", "c"], [b"1", b"2", b"3"])
        assert info.value.code == kvdump.StatusCode.IO_ERROR
        assert info.value.key == "b"
    assert C.get(store, "a") == b"1" and C.get(store, "b") is None

    full = PartlyFailing(lambda key: kvdump.StoreFullError("no room", key=key))
    with pytest.raises(kvdump.StoreFullError, match="no room") as info:
        full.batch_put(["a", "b"], [b"1", memoryview(b"2")])
    assert info.value.key == "b"
    assert isinstance(info.value.__cause__, kvdump.StoreFullError)
    assert full.batch_put(["only"], [b"1"]) == [None]  # nothing failed: the result comes back as is
    assert C.get(full, "only") == b"1"


def test_put_returning_false_raises_when_called_from_python() -> None:
    with pytest.raises(kvdump.StoreError, match=r"put\(\) returned False") as info:
        Refusing().put("k", b"x")
    assert info.value.key == "k"


def test_batch_put_failures_reported_per_item_fail_the_writer_cycle(make_writer) -> None:
    store = PartlyFailing()
    writer = make_writer(store=store)
    with pytest.raises(kvdump.WriteError) as info:
        write_one_cycle(writer, layers=2)  # 3 blocks per layer: the second of each fails
    assert info.value.code == kvdump.StatusCode.IO_ERROR
    assert "1 of 3 block(s) failed" in str(info.value)
    assert info.value.failed == 2  # both layers
    assert kvdump.lookup(store, [7, 8, 9]) == 0  # a failed cycle commits nothing


def test_commit_records_a_store_fails_per_item_fail_the_barrier(make_writer) -> None:
    class CommitsFail(DictStore):
        def batch_put(self, keys: list[str], values: list[memoryview]) -> list[bool | None]:
            results: list[bool | None] = []
            for key, value in zip(keys, values):
                if key.endswith("/commit"):
                    results.append(False)
                else:
                    self.put(key, value)
                    results.append(None)
            return results

    store = CommitsFail()
    writer = make_writer(store=store)
    writer.init()
    kvdump.write_cache_store(writer, 0, torch.randn(2, 4, 8, 2, 16), [0, 1, 2], [7, 8, 9])
    # Every block is stored; only the commit records fail, and the barrier must say so.
    with pytest.raises(kvdump.WriteError, match=r"batch_put\(\) returned False") as info:
        writer.wait_all_done()
    assert info.value.code is kvdump.StatusCode.IO_ERROR
    assert info.value.key.endswith("/commit")
    assert writer.state == "idle"
    assert kvdump.lookup(store, [7, 8, 9]) == 0


def test_batch_exists_results_are_checked() -> None:
    def exists_store(result: Callable[[list[str]], object]) -> DictStore:
        class Answering(DictStore):
            def batch_exists(self, keys: list[str]) -> object:
                return result(keys)

        return Answering()

    assert C.batch_exists(exists_store(lambda keys: [True, False]), ["a", "b"]) == [True, False]
    cases = [
        (lambda keys: 3, "a", r"batch_exists\(\) returned int; expected a list"),
        (lambda keys: [True], "a", r"batch_exists\(\) returned 1 results for 2 keys"),
        (lambda keys: [True, "yes"], "b", r"batch_exists\(\) returned str for a key"),
        (lambda keys: [None, True], "a", r"batch_exists\(\) returned NoneType for a key"),
        (lambda keys: [1, True], "a", r"batch_exists\(\) returned int for a key"),
    ]
    for result, key, problem in cases:
        with pytest.raises(kvdump.KvdumpError, match=problem) as info:
            C.batch_exists(exists_store(result), ["a", "b"])
        assert info.value.code == kvdump.StatusCode.INTERNAL
        assert info.value.key == key
        assert info.value.__cause__ is None
    with pytest.raises(kvdump.LeaseHeldError) as held:
        C.batch_exists(exists_store(lambda keys: [True, kvdump.LeaseHeldError("leased", key="b")]), ["a", "b"])
    assert held.value.key == "b"


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        (lambda keys, buffers: 3, r"batch_get_into\(\) returned int; expected a list"),
        (lambda keys, buffers: None, r"batch_get_into\(\) returned NoneType; expected a list"),
        (lambda keys, buffers: [None] * (len(keys) + 1), r"returned 4 results for 3 keys"),
        (lambda keys, buffers: [True] * len(keys), r"returned bool for a read"),
        (lambda keys, buffers: [b"x"] * len(keys), r"returned bytes for a read"),
    ],
    ids=["int", "None", "long", "True", "bytes"],
)
def test_batch_get_into_results_are_checked(make_writer, result: Callable[..., object], problem: str) -> None:
    class Answering(DictStore):
        def batch_get_into(self, keys: list[str], buffers: list[memoryview]) -> object:
            return result(keys, buffers)

    store = Answering()
    kv = write_one_cycle(make_writer(store=store), layers=1)
    loader = kvdump.KVLoader(store, num_threads=1)
    try:
        with pytest.raises(kvdump.KvdumpError, match=problem) as info:
            loader.load(0, torch.zeros_like(kv), [0, 1, 2], [7, 8, 9])
    finally:
        loader.close()
    assert info.value.code == kvdump.StatusCode.INTERNAL
    assert info.value.key.startswith("kvdump/tp0of1/")
    assert info.value.__cause__ is None


def test_a_batch_put_set_on_the_instance_is_what_the_trampoline_calls() -> None:
    # Instrumenting one store (bench/bench_store_bandwidth.py times batch_put this way) must work
    # even after the class's own method has been looked up.
    store = batch_store(lambda keys: None)
    C.batch_put(store, ["a"], [b"1"])
    calls: list[list[str]] = []
    own = type(store).batch_put.__get__(store)
    store.batch_put = lambda keys, values: calls.append(list(keys)) or own(keys, values)  # type: ignore[method-assign]
    C.batch_put(store, ["b"], [b"2"])
    assert calls == [["b"]]
    del store.batch_put
    C.batch_put(store, ["c"], [b"3"])
    assert calls == [["b"]]
    assert [C.get(store, k) for k in "abc"] == [b"1", b"2", b"3"]

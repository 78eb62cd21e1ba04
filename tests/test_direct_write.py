"""write_cache_store's C++ entry and the registered op are one implementation: whatever the C++
entry takes it stores exactly as the op does, and whatever it declines (tensor subclasses, active
torch modes, arguments needing conversion) still goes through the op, so no call is lost or
treated differently."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import kvdump
from kvdump import _C, cache_ops
from kvdump.errors import error_for_code

SHAPE = (2, 6, 4, 2, 8)


class LoggingTensor(torch.Tensor):
    """A tensor subclass that sees every torch call made with it."""

    calls: list[str] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        cls.calls.append(str(func))
        return super().__torch_function__(func, types, args, kwargs or {})


class SeenOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


class SeenCalls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


def loaded(store: kvdump.CacheStore, layer: int, hashes: list[int]) -> torch.Tensor:
    out = torch.full(SHAPE, float("nan"))
    kvdump.load_cache_store(store, layer, out, list(range(len(hashes))), hashes)
    return out[:, : len(hashes)]


@pytest.fixture
def declined() -> Iterator[list[tuple[tuple[object, ...], dict[str, object]]]]:
    """Every call write_cache_store's C entry hands to its Python path, recorded (and still made)."""
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def recording(*args: object, **kwargs: object) -> None:
        calls.append((args, kwargs))
        cache_ops._write_declined(*args, **kwargs)  # type: ignore[arg-type]

    _C.install_write_fallbacks(recording, error_for_code)
    try:
        yield calls
    finally:
        _C.install_write_fallbacks(cache_ops._write_declined, error_for_code)


def test_plain_arguments_take_the_cpp_entry(make_writer: Callable[..., kvdump.AsyncWriter], declined) -> None:
    writer = make_writer()
    kv = torch.randn(SHAPE)
    writer.init()
    ids, hashes = torch.tensor([4, 1]), torch.tensor([7, 8])
    assert kvdump.write_cache_store(writer, 0, kv, ids, hashes, request="r") is None
    assert declined == []  # queued in C++, without the Python path
    assert writer.wait_all_done().completed == 1
    assert torch.equal(loaded(writer.store, 0, [7, 8]), kv[:, [4, 1]])


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param(lambda w, kv, ids, hs: (w, 0, kv.as_subclass(LoggingTensor), ids, hs), {}, id="tensor-subclass"),
        pytest.param(lambda w, kv, ids, hs: (w, 0, kv, [4, 1], hs), {}, id="ids-as-a-list"),
        pytest.param(lambda w, kv, ids, hs: (w, True, kv, ids, hs), {}, id="bool-layer"),
        pytest.param(lambda w, kv, ids, hs: (w, 2**70, kv, ids, hs), {}, id="huge-layer"),
        pytest.param(lambda w, kv, ids, hs: (w.torch_writer, 0, kv, ids, hs), {}, id="not-an-AsyncWriter"),
        pytest.param(lambda w, kv, ids, hs: (w, 0, kv, ids, hs), {"request": b"r"}, id="bytes-request"),
    ],
)
def test_the_cpp_entry_declines_what_needs_the_op(make_writer, declined, args, kwargs) -> None:
    writer = make_writer()
    writer.init()
    call = args(writer, torch.randn(SHAPE), torch.tensor([4, 1]), torch.tensor([7, 8]))
    with contextlib.suppress(kvdump.KvdumpError):  # what the Python path makes of it is tested elsewhere
        kvdump.write_cache_store(*call, **kwargs)
    assert len(declined) == 1  # handed over whole: the same arguments, untouched
    assert all(a is b for a, b in zip(declined[0][0], call, strict=True)) and declined[0][1] == kwargs
    writer.abort()


def test_a_subclass_still_sees_the_call_and_the_write_is_stored(make_writer) -> None:
    writer = make_writer()
    kv = torch.randn(SHAPE)
    LoggingTensor.calls.clear()
    writer.init()
    kvdump.write_cache_store(writer, 0, kv.as_subclass(LoggingTensor), [4, 1], [7, 8])
    writer.wait_all_done()
    assert any("write_cache_store" in c for c in LoggingTensor.calls)
    assert torch.equal(loaded(writer.store, 0, [7, 8]), kv[:, [4, 1]])


@pytest.mark.parametrize("mode", [SeenOps, SeenCalls], ids=["dispatch-mode", "function-mode"])
def test_an_active_torch_mode_sees_the_call(make_writer, mode) -> None:
    writer = make_writer()
    kv = torch.randn(SHAPE)
    ids, hashes = torch.tensor([4, 1]), torch.tensor([7, 8])
    writer.init()
    with mode() as seen:
        kvdump.write_cache_store(writer, 0, kv, ids, hashes)
    writer.wait_all_done()
    names = seen.ops if isinstance(seen, SeenOps) else seen.calls
    assert any("write_cache_store" in n for n in names), names
    assert torch.equal(loaded(writer.store, 0, [7, 8]), kv[:, [4, 1]])


def test_direct_errors_are_the_typed_errors_of_the_op(make_writer) -> None:
    writer = make_writer()
    kv = torch.randn(SHAPE)
    with pytest.raises(kvdump.LifecycleError):  # no cycle open
        kvdump.write_cache_store(writer, 0, kv, torch.tensor([0]), torch.tensor([1]))
    writer.init()
    with pytest.raises(kvdump.KvdumpValueError, match="block_hashes\\[1\\] repeats block_hashes\\[0\\]"):
        kvdump.write_cache_store(writer, 0, kv, torch.tensor([0, 1]), torch.tensor([5, 5]))
    with pytest.raises(kvdump.KvdumpValueError, match="out of range"):
        kvdump.write_cache_store(writer, 0, kv, torch.tensor([6]), torch.tensor([5]))
    assert writer.wait_all_done().submitted == 0
    writer.close()
    with pytest.raises(kvdump.LifecycleError, match=r"^the kvdump writer was closed"):
        kvdump.write_cache_store(writer, 0, kv, torch.tensor([0]), torch.tensor([1]))


def test_distinct_hashes_that_collide_in_the_bitmap_are_still_accepted(make_writer) -> None:
    """The duplicate check hashes into a bitmap first; values whose bits collide must fall back to
    the exact check, not be refused. 200 hashes into 4096 bits collide with near certainty."""
    writer = make_writer()
    n = 200
    kv = torch.randn(2, n, 2, 1, 4)
    writer.init()
    hashes = torch.arange(n, dtype=torch.int64) * 4096
    kvdump.write_cache_store(writer, 0, kv, torch.arange(n), hashes)
    assert writer.wait_all_done().completed == 1
    dup = hashes.clone()
    dup[150] = dup[3]
    writer.init()
    with pytest.raises(kvdump.KvdumpValueError, match="block_hashes\\[150\\] repeats block_hashes\\[3\\]"):
        kvdump.write_cache_store(writer, 0, kv, torch.arange(n), dup)
    writer.wait_all_done()


def test_the_public_function_is_the_cpp_entry_and_keeps_python_calling_conventions(make_writer) -> None:
    assert kvdump.write_cache_store is _C.write_cache_store
    writer = make_writer()
    k, v = torch.randn(SHAPE[1:]), torch.randn(SHAPE[1:])
    writer.init()
    # Keywords, in any order, on the fast path; a list of ids (declined) keeps them too.
    kvdump.write_cache_store(writer, 0, k, torch.tensor([1]), torch.tensor([21]), request="r", v_cache=v)
    kvdump.write_cache_store(writer, 1, k, [2], [22], v_cache=v, request="r")
    with pytest.raises(TypeError, match="v_cahce"):
        kvdump.write_cache_store(writer, 0, k, [0], [20], v_cahce=v)
    with pytest.raises(TypeError):
        kvdump.write_cache_store(writer, 0, k, [0])  # no block_hashes
    assert writer.wait_all_done().completed == 2
    assert torch.equal(loaded(writer.store, 0, [21])[0], k[[1]]) and torch.equal(
        loaded(writer.store, 1, [22])[1], v[[2]]
    )


def test_the_cpp_entry_raises_typed_errors_and_leaves_others_alone(make_writer) -> None:
    writer = make_writer()
    writer.init()
    with pytest.raises(kvdump.KvdumpValueError, match="out of range") as caught:
        kvdump.write_cache_store(writer, 0, torch.randn(SHAPE), torch.tensor([6]), torch.tensor([5]))
    assert caught.value.code == kvdump.StatusCode.INVALID_ARGUMENT
    with pytest.raises(kvdump.KvdumpTypeError, match="writer"):
        kvdump.write_cache_store(object(), 0, torch.randn(SHAPE), torch.tensor([0]), torch.tensor([5]))
    writer.abort()


def test_the_pinned_torch_lays_out_tensors_as_the_fast_path_reads_them() -> None:
    """The C++ entry reads a plain tensor's at::Tensor straight from its Python object once a check
    at load time confirmed the layout on real tensors; on the torch kvdump pins that check passes,
    so the tests above exercise that path (another torch falls back to reading ``_cdata``)."""
    assert _C.direct_tensor_layout_checked()


@pytest.mark.parametrize("as_tensors", [True, False], ids=["cpp-entry", "registered-op"])
def test_a_write_blocked_on_a_full_queue_lets_a_python_store_make_room(as_tensors: bool) -> None:
    """The call waits for queue space without the GIL, so the worker's Python store (and the thread
    that releases it) can run meanwhile: the write queues once the store moves, well within the
    submit deadline, instead of timing out behind its own caller."""
    from kvdump.testing import StallingStore

    store = StallingStore(limit=60)
    writer = kvdump.AsyncWriter(store, num_threads=1, queue_capacity=1, submit_timeout=60)
    kv = torch.randn(SHAPE)

    def ids(values: list[int]) -> torch.Tensor | list[int]:
        return torch.tensor(values) if as_tensors else values

    try:
        writer.init()
        kvdump.write_cache_store(writer, 0, kv, ids([0]), ids([10]))
        assert store.entered.wait(60)  # the worker is inside the Python store, holding its put
        kvdump.write_cache_store(writer, 1, kv, ids([1]), ids([11]))  # the queue is now full
        releaser = threading.Thread(target=lambda: (time.sleep(0.05), store.release.set()))
        releaser.start()
        kvdump.write_cache_store(writer, 2, kv, ids([2]), ids([12]))  # waits for room
        releaser.join()
        assert writer.wait_all_done().completed == 3
    finally:
        store.release.set()
        writer.close()

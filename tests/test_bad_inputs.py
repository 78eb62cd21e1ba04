"""Bad input is refused with a typed error whose message names the argument, and leaves kvdump usable.

Every case asserts the exception class and, through ``match``, that the message names what was
wrong; where a writer, loader or store was involved, a full cycle afterwards proves it was not
damaged (a write, the barrier, lookup, and a load that gives the same bytes back).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy
import pytest
import torch

import kvdump
from kvdump import StatusCode
from kvdump.hashing import block_hash, block_hashes, full_block_hashes, model_salt
from kvdump.testing import DictStore
from support import LIMIT

SHAPE = (2, 4, 4, 1, 4)  # [K and V, blocks, block_size, kv heads, head_dim]
SRC_IDS = [1, 3]
HASHES = [11, 12]

# Only an accelerator the process actually has may stage; this torch build is CPU-only, but the
# cases stay correct on a machine that has one.
_ACCELERATOR = getattr(torch, "accelerator", None)
HAS_ACCELERATOR = bool(_ACCELERATOR is not None and _ACCELERATOR.is_available())
_needs_cpu_only = pytest.mark.skipif(HAS_ACCELERATOR, reason="this process has an accelerator")


def kv(dtype: torch.dtype = torch.float32, seed: int = 0, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(dtype)


def bits(t: torch.Tensor) -> torch.Tensor:
    # Compared as integers, so that NaN payloads or -0.0 cannot hide a difference.
    return t.view({torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}[t.dtype])


def layers_of(writer: kvdump.AsyncWriter) -> tuple[int, int]:
    return writer.layers or (0, 1)


def assert_round_trip(writer: kvdump.AsyncWriter, hashes: tuple[int, int] = (9001, 9002)) -> None:
    """One full cycle on ``writer``: every layer it stores, published, and loaded back bit for bit."""
    begin, end = layers_of(writer)
    caches = {layer: kv(seed=100 + layer) for layer in range(begin, end)}
    writer.init()
    for layer, cache in caches.items():
        kvdump.write_cache_store(writer, layer, cache, SRC_IDS, list(hashes), request="probe")
    report = writer.wait_all_done(timeout=LIMIT)
    assert (report.completed, report.failed) == (end - begin, 0)
    assert writer.state == "idle"
    keys = dict(key_space=writer.key_space)
    assert kvdump.lookup(writer.store, list(hashes), layers=(begin, end), **keys) == 2
    for layer, cache in caches.items():
        dst = torch.zeros(SHAPE)
        kvdump.load_cache_store(writer.store, layer, dst, [0, 2], list(hashes), **keys)
        assert torch.equal(bits(dst[:, [0, 2]]), bits(cache[:, SRC_IDS]))


# --- AsyncWriter constructor -----------------------------------------------------------------------

NAN, INF = math.nan, math.inf
VE, TE = kvdump.KvdumpValueError, kvdump.KvdumpTypeError

CONSTRUCTOR_CASES = [
    pytest.param({"num_threads": 2.5}, TE, "num_threads", id="num_threads-float"),
    pytest.param({"num_threads": -1}, VE, "num_threads", id="num_threads-negative"),
    pytest.param({"num_threads": 0}, VE, "num_threads", id="num_threads-zero"),
    pytest.param({"num_threads": "2"}, TE, "num_threads", id="num_threads-str"),
    pytest.param({"num_threads": True}, TE, "num_threads", id="num_threads-bool"),
    pytest.param({"num_threads": 5000}, VE, "num_threads", id="num_threads-huge"),
    pytest.param({"queue_capacity": -1}, VE, "queue_capacity", id="queue_capacity-negative"),
    pytest.param({"queue_capacity": 0}, VE, "queue_capacity", id="queue_capacity-zero"),
    pytest.param({"queue_capacity": 1.5}, TE, "queue_capacity", id="queue_capacity-float"),
    pytest.param({"queue_capacity": 2**33}, VE, "queue_capacity", id="queue_capacity-huge"),
    pytest.param({"staging_bytes": -5}, VE, "staging_bytes", id="staging_bytes-negative"),
    pytest.param({"staging_bytes": 0}, VE, "staging_bytes", id="staging_bytes-zero"),
    pytest.param({"submit_timeout": NAN}, VE, "submit_timeout", id="submit_timeout-nan"),
    pytest.param({"submit_timeout": INF}, VE, "submit_timeout", id="submit_timeout-inf"),
    pytest.param({"submit_timeout": -1}, VE, "submit_timeout", id="submit_timeout-negative"),
    pytest.param({"submit_timeout": "1"}, TE, "submit_timeout", id="submit_timeout-str"),
    pytest.param({"staging_timeout": NAN}, VE, "staging_timeout", id="staging_timeout-nan"),
    pytest.param({"staging_timeout": INF}, VE, "staging_timeout", id="staging_timeout-inf"),
    pytest.param({"staging_timeout": -1}, VE, "staging_timeout", id="staging_timeout-negative"),
    pytest.param({"staging_timeout": "1"}, TE, "staging_timeout", id="staging_timeout-str"),
    pytest.param({"abort_timeout": NAN}, VE, "abort_timeout", id="abort_timeout-nan"),
    pytest.param({"abort_timeout": INF}, VE, "abort_timeout", id="abort_timeout-inf"),
    pytest.param({"abort_timeout": -1}, VE, "abort_timeout", id="abort_timeout-negative"),
    pytest.param({"abort_timeout": "1"}, TE, "abort_timeout", id="abort_timeout-str"),
    pytest.param({"max_abandoned_threads": 0}, VE, "max_abandoned_threads", id="max_abandoned-zero"),
    pytest.param({"max_abandoned_threads": 1.5}, TE, "max_abandoned_threads", id="max_abandoned-float"),
    pytest.param({"staging_device": "cuda"}, VE, "staging_device", id="staging_device-cuda", marks=_needs_cpu_only),
    pytest.param({"staging_device": "meta"}, VE, "staging_device", id="staging_device-meta"),
    pytest.param({"staging_device": "xpu"}, VE, "staging_device", id="staging_device-xpu", marks=_needs_cpu_only),
    pytest.param({"staging_device": "bogus"}, VE, "staging_device", id="staging_device-bogus"),
    pytest.param({"staging_device": 7}, TE, "staging_device", id="staging_device-int"),
    pytest.param(
        {"staging_device": ""},
        VE,
        "staging_device",
        id="staging_device-empty",
    ),
    pytest.param({"layers": (3, 3)}, VE, "layers", id="layers-empty"),
    pytest.param({"layers": (5, 2)}, VE, "layers", id="layers-reversed"),
    pytest.param({"layers": (-1, 2)}, VE, "layers", id="layers-negative"),
    pytest.param({"layers": "ab"}, TE, "layers", id="layers-str"),
    pytest.param({"layers": (0, 1, 2)}, TE, "layers", id="layers-triple"),
    pytest.param({"layers": range(0, 4, 2)}, VE, "layers", id="layers-strided-range"),
    pytest.param({"layers": (0.0, 2)}, TE, "layers", id="layers-float"),
    pytest.param({"idle_poll": -0.001}, VE, "idle_poll", id="idle_poll-negative"),
    pytest.param({"idle_poll": 2.0}, VE, "idle_poll", id="idle_poll-over-a-second"),
    pytest.param({"idle_poll": float("nan")}, VE, "idle_poll", id="idle_poll-nan"),
    pytest.param({"idle_poll": "fast"}, TE, "idle_poll", id="idle_poll-str"),
    pytest.param({"idle_poll": True}, TE, "idle_poll", id="idle_poll-bool"),
]


KEY_SPACE_CASES = [
    pytest.param({"namespace": ""}, VE, "namespace", id="namespace-empty"),
    pytest.param({"namespace": "a/b"}, VE, "namespace", id="namespace-slash"),
    pytest.param({"namespace": "a b"}, VE, "namespace", id="namespace-space"),
    pytest.param({"namespace": "a\x00b"}, VE, "namespace", id="namespace-nul"),
    pytest.param({"namespace": 123}, TE, "namespace", id="namespace-int"),
    pytest.param({"tp_rank": -1}, VE, "tp_rank", id="tp_rank-negative"),
    pytest.param({"tp_rank": 1, "tp_size": 1}, VE, "tp_rank", id="tp_rank-equals-size"),
    pytest.param({"tp_rank": 1.0, "tp_size": 2}, TE, "tp_rank", id="tp_rank-float"),
    pytest.param({"tp_size": 0}, VE, "tp_size", id="tp_size-zero"),
    pytest.param({"tp_size": 70000}, VE, "tp_size", id="tp_size-70000"),
    pytest.param({"tp_rank": 5, "tp_size": 70000}, VE, "tp_size", id="tp_size-70000-rank-5"),
    pytest.param({"tp_rank": True}, TE, "tp_rank", id="tp_rank-bool"),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), KEY_SPACE_CASES)
def test_key_space_refuses(kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        kvdump.KeySpace(**kwargs)


@pytest.mark.parametrize(("kwargs", "exc", "match"), CONSTRUCTOR_CASES)
def test_constructor_refuses(make_writer, kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    store = kvdump.MemoryStore(capacity_bytes=1 << 20)
    with pytest.raises(exc, match=match):
        kvdump.AsyncWriter(store, **kwargs)
    assert_round_trip(make_writer(store))  # the store is untouched and a good writer works on it


@pytest.mark.parametrize(
    "store",
    [
        pytest.param(None, id="none"),
        pytest.param("memory://", id="a-url"),
        pytest.param(DictStore, id="a-store-class"),
    ],
)
def test_constructor_refuses_a_non_store(store: object) -> None:
    with pytest.raises(kvdump.KvdumpTypeError, match="store"):
        kvdump.AsyncWriter(store)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        pytest.param({"num_threads": 0}, VE, "num_threads", id="num_threads"),
        pytest.param({"abort_timeout": NAN}, VE, "abort_timeout", id="abort_timeout"),
        pytest.param({"staging_bytes": 0}, VE, "staging_bytes", id="staging_bytes"),
        pytest.param({"key_space": "kvdump"}, TE, "key_space", id="key_space-str"),
    ],
)
def test_loader_constructor_refuses(kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        kvdump.KVLoader(kvdump.MemoryStore(capacity_bytes=1 << 20), **kwargs)


# --- lifecycle misuse ------------------------------------------------------------------------------


def test_submit_and_write_before_init(make_writer) -> None:
    writer = make_writer()
    with pytest.raises(kvdump.LifecycleError, match="init"):
        writer.submit(lambda: None, label="early")
    with pytest.raises(kvdump.LifecycleError, match="init"):
        kvdump.write_cache_store(writer, 0, kv(), SRC_IDS, HASHES)
    assert writer.stats()["submitted"] == 0
    assert_round_trip(writer)


def test_double_init_keeps_the_open_cycle(make_writer) -> None:
    writer = make_writer()
    writer.init()
    kvdump.write_cache_store(writer, 0, kv(), SRC_IDS, HASHES, request="r")
    with pytest.raises(kvdump.LifecycleError, match="init"):
        writer.init()
    assert writer.state == "accepting"
    assert writer.wait_all_done(timeout=LIMIT).completed == 1  # the first cycle's write survived
    assert kvdump.lookup(writer.store, HASHES, num_layers=1) == 2
    assert_round_trip(writer)


def test_wait_and_finish_without_init(make_writer) -> None:
    writer = make_writer()
    with pytest.raises(kvdump.LifecycleError, match="init"):
        writer.wait_all_done(timeout=LIMIT)
    loader = kvdump.KVLoader(writer.store, num_threads=1)
    try:
        with pytest.raises(kvdump.LifecycleError, match="init"):
            loader.finish(timeout=LIMIT)
    finally:
        loader.close()
    assert_round_trip(writer)


BAD_TIMEOUTS = [
    pytest.param(NAN, VE, id="nan"),
    pytest.param(INF, VE, id="inf"),
    pytest.param(-1, VE, id="negative"),
    pytest.param(-0.001, VE, id="slightly-negative"),
    pytest.param("1", TE, id="str"),
    pytest.param(True, TE, id="bool"),
]


@pytest.mark.parametrize(("timeout", "exc"), BAD_TIMEOUTS)
def test_bad_barrier_timeout_leaves_the_cycle_open_and_publishable(
    make_writer, timeout: Any, exc: type[Exception]
) -> None:
    writer = make_writer()
    cache = kv(seed=1)
    writer.init()
    kvdump.write_cache_store(writer, 0, cache, SRC_IDS, HASHES, request="r")
    with pytest.raises(exc, match="timeout"):
        writer.wait_all_done(timeout)
    assert writer.state == "accepting"  # refused before the barrier began: the cycle is still open
    assert kvdump.lookup(writer.store, HASHES, num_layers=1) == 0
    assert writer.wait_all_done(timeout=LIMIT) == kvdump.CycleReport(1, 1, 0, 0)
    assert kvdump.lookup(writer.store, HASHES, num_layers=1) == 2
    dst = torch.zeros(SHAPE)
    kvdump.load_cache_store(writer.store, 0, dst, [0, 2], HASHES)
    assert torch.equal(bits(dst[:, [0, 2]]), bits(cache[:, SRC_IDS]))


@pytest.mark.parametrize(("timeout", "exc"), BAD_TIMEOUTS[:3] + BAD_TIMEOUTS[4:5])
def test_bad_abort_timeout_aborts_nothing(make_writer, timeout: Any, exc: type[Exception]) -> None:
    writer = make_writer()
    writer.init()
    kvdump.write_cache_store(writer, 0, kv(), SRC_IDS, HASHES, request="r")
    with pytest.raises(exc, match="timeout"):
        writer.abort(timeout)
    assert writer.state == "accepting"
    assert writer.wait_all_done(timeout=LIMIT).completed == 1
    assert kvdump.lookup(writer.store, HASHES, num_layers=1) == 2


@pytest.mark.parametrize(("timeout", "exc"), [BAD_TIMEOUTS[0], BAD_TIMEOUTS[2], BAD_TIMEOUTS[4]])
def test_bad_cycle_timeout_opens_no_cycle(make_writer, timeout: Any, exc: type[Exception]) -> None:
    writer = make_writer()
    with pytest.raises(exc, match="timeout"):
        with writer.cycle(timeout):
            pytest.fail("the body of a refused cycle ran")
    assert writer.state == "idle"
    assert_round_trip(writer)


@pytest.mark.parametrize(("timeout", "exc"), [BAD_TIMEOUTS[0], BAD_TIMEOUTS[2], BAD_TIMEOUTS[4]])
def test_bad_close_timeout_keeps_the_writer_open(make_writer, timeout: Any, exc: type[Exception]) -> None:
    writer = make_writer()
    with pytest.raises(exc, match="timeout"):
        writer.close(timeout)
    assert not writer.closed
    assert_round_trip(writer)


SUBMIT_CASES = [
    pytest.param({"layer": 1.5}, TE, "layer", id="layer-float"),
    pytest.param({"layer": -1}, VE, "layer", id="layer-negative"),
    pytest.param({"layer": True}, TE, "layer", id="layer-bool"),
    pytest.param({"request": 3}, TE, "request", id="request-int"),
    pytest.param({"request": "r\udfff"}, VE, "request", id="request-lone-surrogate"),
    pytest.param({"label": 3}, TE, "label", id="label-int"),
    pytest.param({"label": "\ud800"}, VE, "label", id="label-lone-surrogate"),
    pytest.param({"timeout": NAN}, VE, "timeout", id="timeout-nan"),
    pytest.param({"timeout": -1}, VE, "timeout", id="timeout-negative"),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), SUBMIT_CASES)
def test_submit_refuses_and_queues_nothing(
    make_writer, kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    writer = make_writer()
    ran: list[str] = []
    writer.init()
    with pytest.raises(exc, match=match):
        writer.submit(lambda: ran.append("bad"), **kwargs)
    writer.submit(lambda: ran.append("good"), label="good")
    assert writer.wait_all_done(timeout=LIMIT) == kvdump.CycleReport(1, 1, 0, 0)
    assert ran == ["good"]


def test_submit_refuses_a_non_callable(make_writer) -> None:
    writer = make_writer()
    writer.init()
    try:
        with pytest.raises(kvdump.KvdumpTypeError, match="fn"):
            writer.submit(3)  # type: ignore[arg-type]
    finally:
        writer.abort()


@pytest.mark.parametrize("request_", [pytest.param(3, id="int"), pytest.param(None, id="none")])
def test_cancel_request_refuses_a_non_str(make_writer, request_: Any) -> None:
    writer = make_writer()
    writer.init()
    kvdump.write_cache_store(writer, 0, kv(), SRC_IDS, HASHES, request="r")
    with pytest.raises(kvdump.KvdumpTypeError, match="request"):
        writer.cancel_request(request_)
    writer.wait_all_done(timeout=LIMIT)
    assert kvdump.lookup(writer.store, HASHES, num_layers=1) == 2  # nothing was cancelled


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        pytest.param(lambda loader: loader.wait_layer(-1, timeout=LIMIT), VE, "layer", id="wait_layer-negative"),
        pytest.param(lambda loader: loader.wait_layer(1.5, timeout=LIMIT), TE, "layer", id="wait_layer-float"),
        pytest.param(lambda loader: loader.wait_layer(0, timeout=NAN), VE, "timeout", id="wait_layer-timeout-nan"),
        pytest.param(lambda loader: loader.finish(timeout=NAN), VE, "timeout", id="finish-timeout-nan"),
        pytest.param(lambda loader: loader.abort(timeout=-1), VE, "timeout", id="abort-timeout-negative"),
        pytest.param(
            lambda loader: loader.load_async(0.0, torch.zeros(SHAPE), [0], [11]), TE, "layer", id="load_async-layer"
        ),
    ],
)
def test_loader_session_survives_bad_calls(
    make_writer, call: Callable[[kvdump.KVLoader], None], exc: type[Exception], match: str
) -> None:
    writer = make_writer()
    cache = kv(seed=2)
    writer.init()
    kvdump.write_cache_store(writer, 0, cache, SRC_IDS, HASHES)
    writer.wait_all_done(timeout=LIMIT)
    loader = kvdump.KVLoader(writer.store, num_threads=1)
    try:
        loader.start()
        with pytest.raises(exc, match=match):
            call(loader)
        dst = torch.zeros(SHAPE)
        loader.load_async(0, dst, [2, 0], HASHES)
        loader.wait_layer(0, timeout=LIMIT)
        assert loader.finish(timeout=LIMIT).completed == 1
        assert torch.equal(bits(dst[:, [2, 0]]), bits(cache[:, SRC_IDS]))
    finally:
        loader.close()


# --- write_cache_store -----------------------------------------------------------------------------


WRITE_CASES = [
    pytest.param({"layer": 1.0}, TE, "layer", id="layer-float"),
    pytest.param({"layer": -1}, VE, "layer", id="layer-negative"),
    pytest.param({"layer": True}, TE, "layer", id="layer-bool"),
    pytest.param({"layer": 2**31}, VE, "layer", id="layer-huge"),
    pytest.param({"request": 5}, TE, "request", id="request-int"),
    pytest.param({"request": None}, TE, "request", id="request-none"),
    pytest.param({"kv_cache": lambda: kv()[0]}, VE, "kv_cache", id="kv-4d"),
    pytest.param({"kv_cache": lambda: kv()[None]}, VE, "kv_cache", id="kv-6d"),
    pytest.param({"kv_cache": lambda: kv(shape=(3, 4, 4, 1, 4))}, VE, "kv_cache", id="kv-first-dim-3"),
    pytest.param({"kv_cache": lambda: kv().to(torch.int32)}, VE, "kv_cache dtype", id="kv-int32"),
    pytest.param({"kv_cache": lambda: kv().to(torch.bool)}, VE, "kv_cache dtype", id="kv-bool"),
    pytest.param({"kv_cache": lambda: kv().to(torch.complex64)}, VE, "kv_cache dtype", id="kv-complex"),
    pytest.param({"kv_cache": lambda: kv().to("meta")}, VE, "kv_cache.*meta", id="kv-meta"),
    pytest.param({"kv_cache": lambda: torch.zeros(2, 4, 0, 1, 4)}, VE, "kv_cache", id="kv-empty-block"),
    pytest.param({"kv_cache": lambda: None}, VE, "kv_cache", id="kv-none"),
    pytest.param({"kv_cache": lambda: kv().tolist()}, TE, "kv_cache", id="kv-list"),
    pytest.param(
        {"kv_cache": lambda: kv()[0], "v_cache": lambda: torch.zeros(4, 4, 1, 5)}, VE, "v_cache", id="v-shape"
    ),
    pytest.param({"kv_cache": lambda: kv()[0], "v_cache": lambda: kv()[1].half()}, VE, "v_cache", id="v-dtype"),
    pytest.param({"v_cache": lambda: kv()[1]}, VE, "v_cache", id="v-with-5d-kv"),
    pytest.param({"kv_cache": lambda: kv()[0], "v_cache": lambda: [1.0]}, TE, "v_cache", id="v-list"),
    pytest.param({"block_ids": [0, 4]}, VE, "block_ids", id="ids-past-the-end"),
    pytest.param({"block_ids": [-1, 0]}, VE, "block_ids", id="ids-negative"),
    pytest.param({"block_ids": [0.0, 1.0]}, TE, "block_ids", id="ids-floats"),
    pytest.param({"block_ids": [0, 1.5]}, TE, "block_ids", id="ids-fractional"),
    pytest.param({"block_ids": lambda: torch.tensor([0.0, 1.0])}, VE, "block_ids", id="ids-float-tensor"),
    pytest.param({"block_ids": lambda: torch.tensor([True, False])}, VE, "block_ids", id="ids-bool-tensor"),
    pytest.param({"block_ids": [True, False]}, TE, r"block_ids\[0\] must be an integer, got bool", id="ids-bools"),
    pytest.param({"block_ids": lambda: torch.tensor([[0, 1]])}, VE, "block_ids", id="ids-2d-tensor"),
    pytest.param({"block_ids": lambda: torch.tensor([0, 1], device="meta")}, VE, "block_ids", id="ids-meta"),
    pytest.param({"block_ids": None}, TE, "block_ids", id="ids-none"),
    pytest.param({"block_hashes": [11, 12.5]}, TE, "block_hashes", id="hashes-float"),
    pytest.param({"block_hashes": [11, 2**64]}, VE, "block_hashes", id="hashes-too-big"),
    pytest.param({"block_hashes": [True, False]}, TE, r"block_hashes\[0\] must be an integer", id="hashes-bools"),
    pytest.param({"block_hashes": lambda: torch.tensor([11.0, 12.0])}, VE, "block_hashes", id="hashes-float-tensor"),
    pytest.param({"block_hashes": "ab"}, TE, "block_hashes", id="hashes-str"),
    pytest.param({"block_hashes": [11]}, VE, "block_hashes", id="hashes-fewer"),
    pytest.param({"block_hashes": [11, 12, 13]}, VE, "block_hashes", id="hashes-more"),
    pytest.param({"block_hashes": [7, 7]}, VE, "block_hashes", id="hashes-duplicate-for-different-ids"),
    pytest.param({"request": 3}, TE, "request", id="request-int"),
    pytest.param({"request": "r\ud800"}, VE, "request", id="request-lone-surrogate"),
]


@pytest.mark.parametrize(("overrides", "exc", "match"), WRITE_CASES)
def test_write_refuses_and_queues_nothing(
    make_writer, overrides: dict[str, Any], exc: type[Exception], match: str
) -> None:
    writer = make_writer()
    args: dict[str, Any] = {
        "layer": 0,
        "kv_cache": kv(),
        "block_ids": SRC_IDS,
        "block_hashes": HASHES,
        "v_cache": None,
        "request": "bad",
    }
    args.update({name: value() if callable(value) else value for name, value in overrides.items()})
    writer.init()
    with pytest.raises(exc, match=match):
        kvdump.write_cache_store(
            writer, args.pop("layer"), args.pop("kv_cache"), args.pop("block_ids"), args.pop("block_hashes"), **args
        )
    assert writer.stats()["submitted"] == 0
    # The same cycle still takes a good write and publishes it; the refused request left no trace.
    good = kv(seed=3)
    kvdump.write_cache_store(writer, 0, good, SRC_IDS, [21, 22], request="good")
    assert writer.wait_all_done(timeout=LIMIT) == kvdump.CycleReport(1, 1, 0, 0)
    assert kvdump.lookup(writer.store, [21, 22], num_layers=1) == 2
    dst = torch.zeros(SHAPE)
    kvdump.load_cache_store(writer.store, 0, dst, [0, 2], [21, 22])
    assert torch.equal(bits(dst[:, [0, 2]]), bits(good[:, SRC_IDS]))


@pytest.mark.parametrize(
    "not_a_writer",
    [
        pytest.param(lambda w: None, id="none"),
        pytest.param(lambda w: w.torch_writer, id="the-torch-writer"),
        pytest.param(lambda w: w.store, id="a-store"),
    ],
)
def test_write_refuses_a_non_writer(make_writer, not_a_writer: Callable[[kvdump.AsyncWriter], object]) -> None:
    writer = make_writer()
    writer.init()
    try:
        with pytest.raises(kvdump.KvdumpTypeError, match="writer"):
            kvdump.write_cache_store(not_a_writer(writer), 0, kv(), SRC_IDS, HASHES)  # type: ignore[arg-type]
    finally:
        writer.abort()


BEYOND_INT64 = [
    pytest.param(2**63, id="2**63"),
    pytest.param(numpy.uint64(2**63), id="numpy-uint64-2**63"),
    pytest.param(-(2**63) - 1, id="below-int64"),
]


@pytest.mark.parametrize("value", BEYOND_INT64)
@pytest.mark.parametrize(("argument", "kind"), [("block_ids", "id"), ("block_hashes", "hash")])
def test_write_refuses_an_id_or_hash_beyond_int64_as_a_bad_value(
    make_writer, value: object, argument: str, kind: str
) -> None:
    writer = make_writer()
    lists = {"block_ids": list(SRC_IDS), "block_hashes": list(HASHES)}
    lists[argument][1] = value
    writer.init()
    try:
        with pytest.raises(VE, match=rf"^{argument}\[1\] = {int(value)} does not fit a signed 64-bit {kind}$") as info:
            kvdump.write_cache_store(writer, 0, kv(), lists["block_ids"], lists["block_hashes"])
        assert not isinstance(info.value, TypeError)
        assert writer.stats()["submitted"] == 0
    finally:
        writer.abort()


def test_load_refuses_a_hash_beyond_int64_as_a_bad_value(stored) -> None:
    writer, _ = stored
    with pytest.raises(VE, match=r"block_hashes\[1\] = 9223372036854775808 does not fit a signed 64-bit hash") as info:
        kvdump.load_cache_store(writer.store, 0, torch.zeros(SHAPE), [0, 2], [11, 2**63])
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    "block_ids", [pytest.param(list(SRC_IDS), id="list-ids"), pytest.param(torch.tensor(SRC_IDS), id="tensor-ids")]
)
def test_write_refuses_an_unknown_keyword_in_its_own_name(make_writer, block_ids: Any) -> None:
    writer = make_writer()
    writer.init()
    try:
        with pytest.raises(TE, match=r"^write_cache_store\(\) got an unexpected keyword argument 'foo'$"):
            kvdump.write_cache_store(writer, 0, kv(), block_ids, torch.tensor(HASHES), foo=1)  # type: ignore[call-arg]
        # A positional argument missing or too many is Python's own TypeError, in the same name.
        with pytest.raises(TypeError, match=r"^write_cache_store\(\) missing 1 required positional argument"):
            kvdump.write_cache_store(writer, 0, kv(), block_ids)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"^write_cache_store\(\) takes 5 positional arguments but 6"):
            kvdump.write_cache_store(writer, 0, kv(), block_ids, HASHES, None)  # type: ignore[call-arg]
        assert writer.stats()["submitted"] == 0
    finally:
        writer.abort()


@pytest.mark.parametrize(
    "layer", [pytest.param(1, id="below"), pytest.param(4, id="at-end"), pytest.param(100, id="far-above")]
)
def test_write_outside_the_writers_declared_layers(make_writer, layer: int) -> None:
    writer = make_writer(layers=(2, 4))
    writer.init()
    with pytest.raises(kvdump.KvdumpValueError, match=f"layer {layer}"):
        kvdump.write_cache_store(writer, layer, kv(), SRC_IDS, HASHES, request="r")
    assert writer.stats()["submitted"] == 0
    writer.abort()
    assert_round_trip(writer)  # layers 2 and 3, published for the declared range


# --- load ------------------------------------------------------------------------------------------


@pytest.fixture
def stored(make_writer) -> tuple[kvdump.AsyncWriter, torch.Tensor]:
    """A writer whose store holds layer 0 of blocks SRC_IDS under HASHES, published."""
    writer = make_writer()
    cache = kv(seed=4)
    writer.init()
    kvdump.write_cache_store(writer, 0, cache, SRC_IDS, HASHES, request="r")
    writer.wait_all_done(timeout=LIMIT)
    return writer, cache


def key(block_hash: int, layer: int, namespace: str = "kvdump", tp_rank: int = 0, tp_size: int = 1) -> str:
    return kvdump.KeySpace(namespace, tp_rank, tp_size).block_key(block_hash, layer)


LOAD_ARGUMENT_CASES = [
    pytest.param({"block_ids": [2, 2]}, VE, "block_ids", id="dst-ids-duplicate"),
    pytest.param({"block_ids": [0, 4]}, VE, "block_ids", id="dst-ids-past-the-end"),
    pytest.param({"block_ids": [0.0, 1.0]}, TE, "block_ids", id="dst-ids-floats"),
    pytest.param({"block_hashes": [11]}, VE, "block_hashes", id="hashes-fewer"),
    pytest.param({"layer": 0.0}, TE, "layer", id="layer-float"),
    pytest.param({"layer": -2}, VE, "layer", id="layer-negative"),
    pytest.param({"kv_cache": lambda: torch.zeros(SHAPE, dtype=torch.int32)}, VE, "kv_cache", id="kv-int32"),
    pytest.param({"kv_cache": lambda: torch.zeros(SHAPE, device="meta")}, VE, "kv_cache", id="kv-meta"),
    pytest.param({"key_space": ("a", 0, 1)}, TE, "key_space", id="key_space-tuple"),
    pytest.param({"store": "memory://"}, TE, "store", id="store-a-url"),
]


@pytest.mark.parametrize(("overrides", "exc", "match"), LOAD_ARGUMENT_CASES)
def test_load_refuses_bad_arguments_and_writes_nothing(
    stored, overrides: dict[str, Any], exc: type[Exception], match: str
) -> None:
    writer, cache = stored
    dst = torch.zeros(SHAPE)
    args: dict[str, Any] = {
        "store": writer.store,
        "layer": 0,
        "kv_cache": dst,
        "block_ids": [0, 2],
        "block_hashes": HASHES,
    }
    args.update({name: value() if callable(value) else value for name, value in overrides.items()})
    with pytest.raises(exc, match=match):
        kvdump.load_cache_store(
            args.pop("store"),
            args.pop("layer"),
            args.pop("kv_cache"),
            args.pop("block_ids"),
            args.pop("block_hashes"),
            **args,
        )
    assert not bits(dst).any()  # refused before anything was read
    kvdump.load_cache_store(writer.store, 0, dst, [0, 2], HASHES)
    assert torch.equal(bits(dst[:, [0, 2]]), bits(cache[:, SRC_IDS]))


@pytest.mark.parametrize(
    ("dtype", "name"),
    [
        pytest.param(torch.float16, "float16", id="float16"),
        pytest.param(torch.bfloat16, "bfloat16", id="bfloat16"),
        pytest.param(torch.float64, "float64", id="float64"),
    ],
)
def test_load_into_a_cache_of_another_dtype_names_both_dtypes(stored, dtype: torch.dtype, name: str) -> None:
    writer, _ = stored
    with pytest.raises(kvdump.KvdumpValueError, match=f"float32.*{name}") as info:
        kvdump.load_cache_store(writer.store, 0, torch.zeros(SHAPE, dtype=dtype), [0, 2], HASHES)
    assert info.value.key == key(11, 0)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        pytest.param((2, 4, 8, 1, 4), "block_size", id="block_size"),
        pytest.param((2, 4, 4, 1, 2), "head_dim", id="head_dim"),
        pytest.param((2, 4, 4, 2, 2), "num_kv_heads|heads", id="heads"),
    ],
)
def test_load_into_a_cache_of_another_shape_names_the_dimension(stored, shape: tuple[int, ...], match: str) -> None:
    writer, _ = stored
    with pytest.raises(kvdump.KvdumpValueError, match=match) as info:
        kvdump.load_cache_store(writer.store, 0, torch.zeros(shape), [0, 1], HASHES)
    assert info.value.key == key(11, 0)


def test_load_of_a_missing_block_names_its_key(stored) -> None:
    writer, _ = stored
    with pytest.raises(kvdump.KeyNotFoundError) as info:
        kvdump.load_cache_store(writer.store, 0, torch.zeros(SHAPE), [0, 1], [11, 99])
    assert info.value.key == key(99, 0)
    assert key(99, 0) in str(info.value)


@pytest.mark.parametrize(
    ("namespace", "tp_rank", "tp_size"),
    [pytest.param("other", 0, 1, id="another-namespace"), pytest.param("kvdump", 1, 2, id="another-tp-layout")],
)
def test_a_record_copied_from_another_key_space_is_refused(stored, namespace: str, tp_rank: int, tp_size: int) -> None:
    writer, cache = stored
    foreign_key = key(11, 0, namespace, tp_rank, tp_size)
    writer.store.put(foreign_key, writer.store.get(key(11, 0)))
    dst = torch.zeros(SHAPE)
    with pytest.raises(kvdump.KeySpaceMismatchError) as info:
        kvdump.load_cache_store(writer.store, 0, dst, [0], [11], key_space=kvdump.KeySpace(namespace, tp_rank, tp_size))
    assert info.value.key == foreign_key
    assert foreign_key in str(info.value)
    assert info.value.code is StatusCode.KEY_SPACE_MISMATCH
    assert not bits(dst).any()
    kvdump.load_cache_store(writer.store, 0, dst, [0, 2], HASHES)  # the genuine record still loads
    assert torch.equal(bits(dst[:, [0, 2]]), bits(cache[:, SRC_IDS]))


@pytest.mark.parametrize(
    ("target", "match"),
    [
        pytest.param((13, 0), "block hash", id="under-another-hash"),
        pytest.param((11, 3), "layer", id="under-another-layer"),
    ],
)
def test_a_record_renamed_within_the_key_space_is_refused(stored, target: tuple[int, int], match: str) -> None:
    writer, _ = stored
    renamed = key(*target)
    writer.store.put(renamed, writer.store.get(key(11, 0)))
    with pytest.raises(kvdump.KvdumpError, match=match) as info:
        kvdump.load_cache_store(writer.store, target[1], torch.zeros(SHAPE), [0], [target[0]])
    assert info.value.key == renamed


# --- lookup ----------------------------------------------------------------------------------------


LOOKUP_CASES = [
    pytest.param([1001.5], {}, TE, "block_hashes", id="hash-fractional"),
    pytest.param([11.0], {}, TE, "block_hashes", id="hash-integral-float"),
    pytest.param([True], {}, TE, "block_hashes", id="hash-bool"),
    pytest.param(["11"], {}, TE, "block_hashes", id="hash-str"),
    pytest.param([None], {}, TE, "block_hashes", id="hash-none"),
    pytest.param([2**64], {}, VE, "block_hashes", id="hash-too-big"),
    pytest.param([-(2**63) - 1], {}, VE, "block_hashes", id="hash-too-small"),
    pytest.param(lambda: torch.tensor([11.0]), {}, VE, "block_hashes", id="hashes-float-tensor"),
    pytest.param(lambda: torch.tensor([[11]]), {}, VE, "block_hashes", id="hashes-2d-tensor"),
    pytest.param(None, {}, TE, "block_hashes", id="hashes-none"),
    pytest.param(11, {}, TE, "block_hashes", id="hashes-an-int"),
    pytest.param(HASHES, {"num_layers": 0}, VE, "num_layers", id="num_layers-zero"),
    pytest.param(HASHES, {"num_layers": -1}, VE, "num_layers", id="num_layers-negative"),
    pytest.param(HASHES, {"num_layers": 2.5}, TE, "num_layers", id="num_layers-float"),
    pytest.param(HASHES, {"num_layers": True}, TE, "num_layers", id="num_layers-bool"),
    pytest.param(HASHES, {"num_layers": "2"}, TE, "num_layers", id="num_layers-str"),
    pytest.param(HASHES, {"num_layers": 1, "layers": (0, 1)}, VE, "num_layers.*layers", id="num_layers-and-layers"),
    pytest.param(HASHES, {"layers": (2, 1)}, VE, "layers", id="layers-reversed"),
    pytest.param(HASHES, {"layers": "ab"}, TE, "layers", id="layers-str"),
    pytest.param(HASHES, {"key_space": "kvdump"}, TE, "key_space", id="key_space-str"),
]


@pytest.mark.parametrize(("hashes", "kwargs", "exc", "match"), LOOKUP_CASES)
def test_lookup_refuses(stored, hashes: Any, kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    writer, _ = stored
    with pytest.raises(exc, match=match):
        kvdump.lookup(writer.store, hashes() if callable(hashes) else hashes, **kwargs)
    assert kvdump.lookup(writer.store, HASHES, num_layers=1) == 2


def test_lookup_refuses_a_non_store_as_a_type_error() -> None:
    with pytest.raises(kvdump.KvdumpTypeError, match="store"):
        kvdump.lookup("memory://", HASHES)  # type: ignore[arg-type]


def test_lookup_of_a_corrupt_commit_record_names_its_key(stored) -> None:
    writer, _ = stored
    commit = kvdump.KeySpace().commit_key(12, 0, 1)
    record = bytearray(writer.store.get(commit))
    record[-1] ^= 0xFF
    writer.store.put(commit, bytes(record))
    with pytest.raises(kvdump.ChecksumError) as info:
        kvdump.lookup(writer.store, HASHES, num_layers=1)
    assert info.value.key == commit
    assert commit in str(info.value)


def test_lookup_of_a_commit_record_from_another_namespace_names_its_key(stored) -> None:
    writer, _ = stored
    other = kvdump.KeySpace("other")
    foreign = other.commit_key(11, 0, 1)
    # The block's layer copied too: a MemoryStore publishes no record over a layer it lacks.
    writer.store.put(other.block_key(11, 0), writer.store.get(kvdump.KeySpace().block_key(11, 0)))
    writer.store.put(foreign, writer.store.get(kvdump.KeySpace().commit_key(11, 0, 1)))
    with pytest.raises(kvdump.KeySpaceMismatchError) as info:
        kvdump.lookup(writer.store, HASHES, key_space=kvdump.KeySpace("other"), num_layers=1)
    assert info.value.key == foreign
    assert kvdump.lookup(writer.store, HASHES, num_layers=1) == 2


# --- open_store ------------------------------------------------------------------------------------


OPEN_STORE_CASES = [
    pytest.param("bogus://x", kvdump.UnsupportedError, "bogus", id="unknown-scheme"),
    pytest.param("", VE, "scheme", id="empty"),
    pytest.param("memory", VE, "scheme", id="no-scheme"),
    pytest.param("/tmp/kv", VE, "scheme", id="a-path"),
    pytest.param("memory://?capacity_bytes=abc", VE, "capacity_bytes", id="memory-capacity-word"),
    pytest.param("memory://?capacity_bytes=1.5", VE, "capacity_bytes", id="memory-capacity-float"),
    pytest.param("memory://?capacity_bytes=1e6", VE, "capacity_bytes", id="memory-capacity-exponent"),
    pytest.param("memory://?capacity_bytes=", VE, "capacity_bytes", id="memory-capacity-blank"),
    pytest.param("memory://?eviction=sometimes", VE, "eviction", id="memory-eviction-unknown"),
    pytest.param("memory://?foo=1", VE, "foo", id="memory-unknown-option"),
    pytest.param("memory://?capacity_bytes=-1", VE, "capacity_bytes", id="memory-capacity-negative"),
    pytest.param("memory://?capacity_bytes=99999999999999999999999", VE, "capacity_bytes", id="memory-capacity-huge"),
    pytest.param("memory://?high_watermark=2", VE, "high_watermark", id="memory-watermark-above-one"),
    pytest.param("file://host/kv", VE, "file:///", id="file-with-host"),
    pytest.param("file://", VE, "no path", id="file-without-path"),
    pytest.param("file:///{tmp}?fsync=maybe", VE, "fsync", id="file-fsync-word"),
    pytest.param("file:///{tmp}?fsync=", VE, "fsync", id="file-fsync-blank"),
    pytest.param("file:///{tmp}?bogus=1", VE, "bogus", id="file-unknown-option"),
    pytest.param("mooncake://", VE, "mooncake://", id="mooncake-without-master"),
    pytest.param("mooncake://h:1?global_segment_size=x", VE, "global_segment_size", id="mooncake-segment-word"),
    pytest.param("mooncake://h:1?overwrite=perhaps", VE, "overwrite", id="mooncake-overwrite-word"),
    pytest.param("mooncake://h:1?read_retry_seconds=fast", VE, "read_retry_seconds", id="mooncake-retry-word"),
    pytest.param("mooncake://h:1?zzz=1", VE, "zzz", id="mooncake-unknown-option"),
    # Refused at once: Mooncake's client would retry an address it cannot use for about 90 s.
    pytest.param("mooncake://127.0.0.1:99999", VE, r"master port .* got '99999'", id="mooncake-port-too-big"),
    pytest.param("mooncake://127.0.0.1:0", VE, r"master port .* got '0'", id="mooncake-port-zero"),
    pytest.param("mooncake://127.0.0.1:abc", VE, r"master port .* got 'abc'", id="mooncake-port-word"),
    pytest.param("mooncake://127.0.0.1:", VE, r"master port .* got ''", id="mooncake-port-blank"),
    pytest.param("mooncake://[::1]:70000?protocol=tcp", VE, r"master port .* got '70000'", id="mooncake-ipv6-port"),
    pytest.param("mooncake://:50051", VE, "mooncake://master-host:port", id="mooncake-without-host"),
]


@pytest.mark.parametrize(("url", "exc", "match"), OPEN_STORE_CASES)
def test_open_store_refuses(make_writer, tmp_path, url: str, exc: type[Exception], match: str) -> None:
    root = tmp_path / "kv"
    with pytest.raises(exc, match=match):
        kvdump.open_store(url.replace("/{tmp}", str(root)))
    assert not root.exists()  # refused before a store was made
    assert_round_trip(make_writer(kvdump.open_store("memory://?capacity_bytes=1048576")))


@pytest.mark.parametrize(
    "url", [pytest.param(5, id="int"), pytest.param(None, id="none"), pytest.param(b"memory://", id="bytes")]
)
def test_open_store_refuses_a_non_str_url(url: Any) -> None:
    with pytest.raises(kvdump.KvdumpTypeError, match="(?i)url"):
        kvdump.open_store(url)


# --- stores written in Python ----------------------------------------------------------------------


def write_request(writer: kvdump.AsyncWriter, hashes: list[int] = HASHES) -> None:
    writer.init()
    kvdump.write_cache_store(writer, 0, kv(seed=5), SRC_IDS, hashes, request="r")


def assert_refused_and_unpublished(writer: kvdump.AsyncWriter, match: str) -> kvdump.WriteError:
    with pytest.raises(kvdump.WriteError, match=match) as info:
        writer.wait_all_done(timeout=LIMIT)
    assert info.value.failed_requests == ("r",)
    assert writer.state == "idle"
    assert kvdump.lookup(writer.store, HASHES, num_layers=1) == 0
    return info.value


class FalsePut(DictStore):
    """put() reports failure by returning False instead of raising."""

    def put(self, key: str, value: memoryview) -> bool:  # type: ignore[override]
        if key.endswith("/commit"):
            super().put(key, value)
            return True
        return False


def test_python_put_returning_false_fails_the_write(make_writer) -> None:
    writer = make_writer(FalsePut())
    write_request(writer)
    assert_refused_and_unpublished(writer, r"put\(\) returned False")


class BatchResults(DictStore):
    """batch_put() stores everything, then returns ``results(keys)``."""

    def __init__(self, results: Callable[[list[str]], Any]) -> None:
        super().__init__()
        self.results = results

    def batch_put(self, keys: list[str], values: list[memoryview]) -> Any:
        for k, v in zip(keys, values):
            self.put(k, v)
        return self.results(keys) if not keys[0].endswith("/commit") else None


@pytest.mark.parametrize(
    ("results", "match"),
    [
        pytest.param(lambda keys: [True, True], "batch_put", id="true-true"),
        pytest.param(lambda keys: [False] * len(keys), "batch_put", id="false-each"),
        pytest.param(lambda keys: "ab", "batch_put", id="a-str-of-the-right-length"),
        pytest.param(lambda keys: [None], "batch_put.* returned 1 results for 2 keys", id="too-few"),
        pytest.param(lambda keys: [None] * (len(keys) + 3), "batch_put.* returned 5 results for 2 keys", id="too-many"),
        pytest.param(lambda keys: [], "batch_put.* returned 0 results for 2 keys", id="empty"),
        pytest.param(lambda keys: 5, "batch_put.*int", id="an-int"),
    ],
)
def test_python_batch_put_with_bad_results_fails_the_write(
    make_writer, results: Callable[[list[str]], Any], match: str
) -> None:
    store = BatchResults(results)
    writer = make_writer(store)
    write_request(writer)
    assert_refused_and_unpublished(writer, match)
    store.results = lambda keys: None
    assert_round_trip(writer)  # the same writer and store work once batch_put behaves


class IntGet(DictStore):
    def get(self, key: str) -> Any:
        return 42


def test_python_get_returning_a_non_buffer_fails_the_load(make_writer) -> None:
    store = IntGet()
    writer = make_writer(store)
    write_request(writer)
    writer.wait_all_done(timeout=LIMIT)
    dst = torch.zeros(SHAPE)
    with pytest.raises(kvdump.KvdumpError, match=r"get\(\) returned int") as info:
        kvdump.load_cache_store(store, 0, dst, [0, 2], HASHES)
    assert info.value.code is StatusCode.INTERNAL
    assert info.value.key == key(11, 0)
    assert not bits(dst).any()


# --- hash chains -----------------------------------------------------------------------------------

TOKENS = list(range(10))

HASHING_CASES = [
    pytest.param(lambda: block_hashes(TOKENS, 0), VE, "block_size must be >= 1, got 0", id="block_size-zero"),
    pytest.param(lambda: block_hashes(TOKENS, -4), VE, "block_size must be >= 1", id="block_size-negative"),
    pytest.param(
        lambda: block_hashes(TOKENS, True), TE, "block_size must be an integer, got bool", id="block_size-bool"
    ),
    pytest.param(lambda: block_hashes(TOKENS, 4.0), TE, "block_size must be an integer", id="block_size-float"),
    pytest.param(lambda: block_hashes(TOKENS, "4"), TE, "block_size must be an integer", id="block_size-str"),
    pytest.param(lambda: block_hashes(TOKENS, 4, None), TE, "salt must be a str, got NoneType", id="salt-none"),
    pytest.param(lambda: block_hashes(TOKENS, 4, 7), TE, "salt must be a str, got int", id="salt-int"),
    pytest.param(lambda: block_hashes(TOKENS, 4, b"m"), TE, "salt must be a str, got bytes", id="salt-bytes"),
    pytest.param(lambda: block_hashes([], 4, None), TE, "salt must be a str", id="salt-none-no-tokens"),
    pytest.param(lambda: full_block_hashes(TOKENS, 0), VE, "block_size must be >= 1", id="full-block_size-zero"),
    pytest.param(
        lambda: full_block_hashes(TOKENS, True), TE, "block_size must be an integer", id="full-block_size-bool"
    ),
    pytest.param(lambda: full_block_hashes(TOKENS, "4"), TE, "block_size must be an integer", id="full-block_size-str"),
    pytest.param(lambda: full_block_hashes(TOKENS, 4, None), TE, "salt must be a str", id="full-salt-none"),
    pytest.param(lambda: block_hash(TOKENS, None, None), TE, "salt must be a str", id="block_hash-salt-none"),
    pytest.param(lambda: block_hash(TOKENS, "x"), TE, "parent must be an integer", id="block_hash-parent-str"),
    pytest.param(lambda: block_hash(TOKENS, 2**63), VE, "parent hash .* does not fit", id="block_hash-parent-too-big"),
    pytest.param(lambda: model_salt("m", "float16", cache_salt=5), TE, "cache_salt must be a str", id="cache_salt-int"),
    pytest.param(lambda: model_salt("m", "float16", adapter=5), TE, "adapter must be a str", id="adapter-int"),
    pytest.param(lambda: model_salt(None, "float16"), TE, "model must be a str", id="model-none"),
    pytest.param(lambda: model_salt("m", 16), TE, "kv_dtype must be a str", id="kv_dtype-int"),
]


@pytest.mark.parametrize(("call", "exc", "match"), HASHING_CASES)
def test_hashing_refuses_a_bad_argument_by_name(call: Callable[[], object], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        call()

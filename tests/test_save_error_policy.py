"""wrap_model's on_save_error policy: with "report", a forward whose save fails still returns its
output (bit for bit what the unwrapped model computes), the failed requests are not committed while
the cycle's other requests are, the failure is counted in stats() and logged once per cycle; with
"raise" the WriteError propagates; a forward that raises propagates under either policy; a policy
that is not one of the two is refused by name."""

from __future__ import annotations

import logging
import random

import pytest
import torch

import kvdump
from kvdump import StatusCode
from kvdump.cache_ops import write_cache_store
from kvdump.hashing import block_hashes
from kvdump.models import BlockAllocator, LlamaConfig, ReferenceLlama, blocks_needed
from kvdump.save_policy import run_in_cycle
from kvdump.testing import FailingStore, StallingStore, block_keys
from support import LIMIT

BLOCK = 4
NUM_BLOCKS = 32
LAYERS = 4
NAMES = ["good", "bad"]
FAILING_LAYER = 2


class Boom(Exception):
    pass


class Prompts:
    """Two prompts prefilled in one forward, each written under its own request name."""

    def __init__(self, seed: int, vocab_size: int) -> None:
        rng = random.Random(seed)
        self.tokens = [[rng.randrange(vocab_size) for _ in range(n)] for n in (12, 9)]
        allocator = BlockAllocator(NUM_BLOCKS)
        self.tables = [allocator.allocate(blocks_needed(len(p), BLOCK)) for p in self.tokens]
        self.hashes = dict(zip(NAMES, (block_hashes(p, BLOCK) for p in self.tokens)))

    def layer_hook(self, writer: kvdump.AsyncWriter):  # type: ignore[no-untyped-def]
        def dump(layer: int, kv: torch.Tensor) -> None:
            for name, table in zip(NAMES, self.tables):
                chain = self.hashes[name]
                write_cache_store(writer, layer, kv, table[: len(chain)], chain, request=name)

        return dump


@pytest.fixture
def model() -> ReferenceLlama:
    return ReferenceLlama(LlamaConfig.tiny(num_layers=LAYERS))


def failing_writer(make_writer, prompts: Prompts) -> tuple[kvdump.AsyncWriter, FailingStore]:  # type: ignore[no-untyped-def]
    """A writer whose store refuses one layer of the "bad" request's first block."""
    refused = block_keys(prompts.hashes["bad"][:1], [FAILING_LAYER])
    store = FailingStore(kvdump.MemoryStore(capacity_bytes=16 << 20), lambda key: key in refused)
    return make_writer(store), store


def reference_logits(model: ReferenceLlama, prompts: Prompts) -> torch.Tensor:
    return model.prefill(prompts.tokens, model.new_cache(NUM_BLOCKS, BLOCK), prompts.tables)


def kvdump_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "kvdump"]


def test_report_returns_the_output_commits_the_good_request_and_logs_once(
    model: ReferenceLlama, make_writer, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = Prompts(seed=1, vocab_size=model.config.vocab_size)
    expected = reference_logits(model, prompts)
    writer, store = failing_writer(make_writer, prompts)
    kvdump.wrap_model(model, writer, method="prefill", timeout=LIMIT, on_save_error="report")
    caplog.set_level(logging.INFO, logger="kvdump")

    logits = model.prefill(
        prompts.tokens, model.new_cache(NUM_BLOCKS, BLOCK), prompts.tables, layer_hook=prompts.layer_hook(writer)
    )

    assert torch.equal(logits, expected)
    assert writer.state == "idle"
    assert len(store.refused) == 1
    assert kvdump.lookup(store, prompts.hashes["bad"], num_layers=LAYERS) == 0
    assert kvdump.lookup(store, prompts.hashes["good"], num_layers=LAYERS) == len(prompts.hashes["good"])
    stats = writer.stats()
    assert (stats["save_failures_reported"], stats["requests_failed_reported"]) == (1, 1)
    (record,) = kvdump_records(caplog)
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert "good" not in message  # the request that stored is not named
    assert "failed requests, not committed: bad" in message
    assert "STORE_FULL" in message and store.refused[0] in message
    assert record.kvdump_failed_requests == ("bad",)  # type: ignore[attr-defined]
    assert record.kvdump_code is StatusCode.STORE_FULL  # type: ignore[attr-defined]
    assert record.kvdump_key == store.refused[0]  # type: ignore[attr-defined]

    # A cycle whose save succeeds adds neither a count nor a record; the next failed one adds one of each.
    model.prefill(prompts.tokens, model.new_cache(NUM_BLOCKS, BLOCK), prompts.tables)
    assert len(kvdump_records(caplog)) == 1
    assert writer.stats()["save_failures_reported"] == 1
    again = model.prefill(
        prompts.tokens, model.new_cache(NUM_BLOCKS, BLOCK), prompts.tables, layer_hook=prompts.layer_hook(writer)
    )
    assert torch.equal(again, expected)
    assert len(kvdump_records(caplog)) == 2
    stats = writer.stats()
    assert (stats["save_failures_reported"], stats["requests_failed_reported"], stats["cycles"]) == (2, 2, 3)


def test_raise_propagates_the_write_error_and_reports_nothing(
    model: ReferenceLlama, make_writer, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = Prompts(seed=2, vocab_size=model.config.vocab_size)
    writer, store = failing_writer(make_writer, prompts)
    kvdump.wrap_model(model, writer, method="prefill", timeout=LIMIT)  # "raise" is the default
    caplog.set_level(logging.INFO, logger="kvdump")

    with pytest.raises(kvdump.WriteError) as caught:
        model.prefill(
            prompts.tokens, model.new_cache(NUM_BLOCKS, BLOCK), prompts.tables, layer_hook=prompts.layer_hook(writer)
        )
    assert caught.value.failed_requests == ("bad",)
    assert caught.value.code is StatusCode.STORE_FULL
    assert caught.value.layer == FAILING_LAYER
    assert writer.state == "idle"
    assert kvdump.lookup(store, prompts.hashes["bad"], num_layers=LAYERS) == 0
    stats = writer.stats()
    assert (stats["save_failures_reported"], stats["requests_failed_reported"]) == (0, 0)
    assert kvdump_records(caplog) == []


# A kvdump error raised by the forward itself (here: as a layer would propagate one) is the
# forward's failure, not the save's, so "report" must not swallow it either.
@pytest.mark.parametrize("raised", [Boom, kvdump.StoreFullError])
@pytest.mark.parametrize("policy", ["raise", "report"])
def test_a_forward_that_raises_propagates_under_either_policy(
    model: ReferenceLlama, make_writer, caplog: pytest.LogCaptureFixture, policy: str, raised: type[Exception]
) -> None:
    prompts = Prompts(seed=3, vocab_size=model.config.vocab_size)
    writer, store = failing_writer(make_writer, prompts)
    kvdump.wrap_model(model, writer, method="prefill", timeout=LIMIT, on_save_error=policy)
    dump = prompts.layer_hook(writer)

    def fail_at_layer_1(layer: int, kv: torch.Tensor) -> None:
        dump(layer, kv)
        if layer == 1:
            raise raised("layer 1 failed")

    with pytest.raises(raised, match="layer 1 failed"):
        model.prefill(prompts.tokens, model.new_cache(NUM_BLOCKS, BLOCK), prompts.tables, layer_hook=fail_at_layer_1)
    assert writer.state == "idle"
    stats = writer.stats()
    assert stats["aborts"] == 1
    assert (stats["save_failures_reported"], stats["requests_failed_reported"]) == (0, 0)
    assert kvdump_records(caplog) == []
    for chain in prompts.hashes.values():
        assert kvdump.lookup(store, chain) == 0


def test_report_returns_the_output_when_the_barrier_times_out(make_writer, caplog: pytest.LogCaptureFixture) -> None:
    store = StallingStore()  # every put blocks until released: the barrier's deadline passes first
    writer = make_writer(store, num_threads=1)
    make_writer.events.append(store.release)
    kv = torch.randn(2, 1, BLOCK, 1, 8)

    class Model:
        def forward(self) -> str:
            write_cache_store(writer, 0, kv, [0], [5], request="slow")
            assert store.entered.wait(LIMIT)
            return "output"

    model = kvdump.wrap_model(Model(), writer, timeout=0.05, on_save_error="report")
    assert model.forward() == "output"
    assert writer.state == "idle"
    stats = writer.stats()
    assert stats["save_failures_reported"] == 1
    assert stats["requests_failed_reported"] == 0  # a timeout names no failed request: the cycle was aborted
    (record,) = kvdump_records(caplog)
    assert record.kvdump_code is StatusCode.TIMEOUT  # type: ignore[attr-defined]
    assert "the cycle was aborted: none of its requests committed" in record.getMessage()
    store.release.set()
    assert kvdump.lookup(store, [5]) == 0


@pytest.mark.parametrize("policy", ["report", "raise"])
def test_a_full_queue_fails_the_request_under_report_and_raises_under_raise(
    make_writer, caplog: pytest.LogCaptureFixture, policy: str
) -> None:
    store = StallingStore()  # puts block until released
    writer = make_writer(store, num_threads=1, queue_capacity=1, submit_timeout=0.05)
    make_writer.events.append(store.release)
    kv = torch.randn(2, 1, BLOCK, 1, 8)

    class Model:
        def forward(self) -> str:
            write_cache_store(writer, 0, kv, [0], [5], request="r")
            assert store.entered.wait(LIMIT)  # layer 0 holds the only worker
            write_cache_store(writer, 1, kv, [0], [5], request="r")  # fills the queue
            try:
                # The queue stays full past submit_timeout: under "report" these fail request r
                # and return, the second without waiting; under "raise" the first raises.
                write_cache_store(writer, 2, kv, [0], [5], request="r")
                write_cache_store(writer, 3, kv, [0], [5], request="r")
            finally:
                store.release.set()
            return "output"

    model = kvdump.wrap_model(Model(), writer, timeout=LIMIT, on_save_error=policy)
    if policy == "raise":
        with pytest.raises(kvdump.WriteTimeout, match="queue full"):
            model.forward()
        assert writer.state == "idle"
        return
    assert model.forward() == "output"
    assert writer.state == "idle"
    stats = writer.stats()
    assert (stats["submitted"], stats["completed"], stats["failed"]) == (4, 2, 2)
    assert (stats["save_failures_reported"], stats["requests_failed_reported"]) == (1, 1)
    (record,) = kvdump_records(caplog)
    assert record.kvdump_failed_requests == ("r",)  # type: ignore[attr-defined]
    assert record.kvdump_code is StatusCode.TIMEOUT  # type: ignore[attr-defined]
    assert "write layer 2 of request r" in record.getMessage()
    assert kvdump.lookup(store, [5]) == 0  # a request missing layers is never committed
    # The next forward opens a fresh cycle, which waits for queue space again.
    store.stalling = False
    with writer.cycle(timeout=LIMIT):
        for layer in range(4):
            write_cache_store(writer, layer, kv, [0], [5], request="r")
    assert kvdump.lookup(store, [5]) == 1


def test_a_misused_writer_is_not_reported_as_a_save_failure(make_writer, caplog: pytest.LogCaptureFixture) -> None:
    writer = make_writer()

    class Model:
        def forward(self) -> str:
            writer.abort()  # closes the cycle under the wrapper: its barrier has nothing to wait for
            return "output"

    model = kvdump.wrap_model(Model(), writer, on_save_error="report")
    with pytest.raises(kvdump.LifecycleError):
        model.forward()
    assert writer.state == "idle"
    assert writer.stats()["save_failures_reported"] == 0
    assert kvdump_records(caplog) == []


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("ignore", kvdump.KvdumpValueError),
        ("RAISE", kvdump.KvdumpValueError),
        ("", kvdump.KvdumpValueError),
        (None, kvdump.KvdumpTypeError),
        (True, kvdump.KvdumpTypeError),
        (1, kvdump.KvdumpTypeError),
    ],
)
def test_a_bad_policy_is_refused_naming_on_save_error(
    model: ReferenceLlama, make_writer, value: object, error: type[Exception]
) -> None:
    writer = make_writer()
    with pytest.raises(error, match=r"on_save_error must be one of 'raise', 'report'"):
        kvdump.wrap_model(model, writer, method="prefill", on_save_error=value)  # type: ignore[arg-type]
    assert not hasattr(model.prefill, "__kvdump_writer__")  # nothing was wrapped

    ran: list[bool] = []
    with pytest.raises(error, match="on_save_error"):
        run_in_cycle(writer, lambda: ran.append(True), on_save_error=value)  # type: ignore[arg-type]
    assert ran == []
    assert writer.state == "idle" and writer.stats()["cycles"] == 0


def test_stats_count_no_reported_failure_on_a_fresh_writer(make_writer) -> None:
    stats = make_writer().stats()
    assert (stats["save_failures_reported"], stats["requests_failed_reported"]) == (0, 0)

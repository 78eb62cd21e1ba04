"""Fault-injection soak: thousands of short KV cycles mixing store failures, per-request cancels,
aborts and zero deadlines; every failure is reported and exactly the right requests are published.

Each cycle writes a few requests (two layers of two blocks each, every block hash unique to its
request), in layer order as a forward does. A seeded plan decides, per cycle, which block puts the
store fails and what happens to the cycle: a plain barrier, a request cancelled part-way, an abort
part-way, or a 0 s barrier followed by a good barrier or by an abort. The test keeps its own model
of what must be published (a request is published iff its cycle was not aborted, it was not
cancelled, and none of its puts failed) and checks the store against it after every cycle and once
more at the end, where every published block must load bit for bit.

Nothing here depends on timing: a 0 s barrier that must time out has a gate task holding the cycle
open, and aborts get a deadline long enough that nothing is ever abandoned (which the test asserts,
since an abandoned task's failure would go unreported by design).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

import pytest
import torch

import kvdump
from kvdump.testing import FailingStore, StallingStore, no_key
from support import LIMIT

NS = "kvdump"

CYCLES = 5000
LAYERS = 2
BLOCKS_PER_REQUEST = 2
MAX_REQUESTS = 4
BLOCK = (4, 1, 4)  # tokens per block, kv heads, head_dim
FAILURE_RATE = 0.04  # per write task (one request, one layer)
ACTIONS = {"plain": 40, "cancel": 15, "abort": 10, "deadline_then_wait": 20, "deadline_then_abort": 15}


@dataclass
class Request:
    name: str
    hashes: list[int]
    block_ids: list[int]
    publishable: bool = False


@dataclass
class Tally:
    cycles: int = 0
    requests: int = 0
    injected_planned: int = 0
    reported: int = 0
    published: int = 0
    aborted_cycles: int = 0
    cancelled_requests: int = 0
    cancelled_tasks: int = 0
    zero_deadline_timeouts: int = 0
    actions: dict[str, int] = field(default_factory=dict)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)


def block_key(block_hash: int, layer: int) -> str:
    return kvdump.KeySpace(NS).block_key(block_hash, layer)


class Gate:
    """A task that holds a cycle open (so that a 0 s barrier certainly times out) until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self) -> None:
        if not self.release.wait(LIMIT):
            raise TimeoutError("gate never released")


@pytest.mark.timeout(180)
def test_fault_injection_soak() -> None:
    rng = random.Random(20261122)
    inner = kvdump.MemoryStore(capacity_bytes=256 << 20)
    fail_keys: set[str] = set()  # changes only between cycles, while no task runs
    store = FailingStore(
        inner, lambda key: key in fail_keys, error=lambda key: kvdump.StoreError("injected failure", key=key)
    )
    writer = kvdump.AsyncWriter(store, num_threads=2)
    caches = [torch.empty((2, MAX_REQUESTS * BLOCKS_PER_REQUEST, *BLOCK)) for _ in range(LAYERS)]
    gen = torch.Generator().manual_seed(7)
    expected: dict[tuple[int, int], torch.Tensor] = {}  # (hash, layer) -> the K/V written, for published blocks
    all_requests: list[Request] = []
    tally = Tally()
    next_hash = 1 << 40
    action_names, action_weights = list(ACTIONS), list(ACTIONS.values())
    try:
        for cycle in range(CYCLES):
            # --- plan ---------------------------------------------------------------------------
            requests = []
            for r in range(rng.randint(2, MAX_REQUESTS)):
                hashes = list(range(next_hash, next_hash + BLOCKS_PER_REQUEST))
                next_hash += BLOCKS_PER_REQUEST
                ids = [r * BLOCKS_PER_REQUEST + b for b in range(BLOCKS_PER_REQUEST)]
                requests.append(Request(f"c{cycle}r{r}", hashes, ids))
            failing: dict[str, str] = {}  # key -> request; at most one failing key per write task
            for req in requests:
                for layer in range(LAYERS):
                    if rng.random() < FAILURE_RATE:
                        failing[block_key(rng.choice(req.hashes), layer)] = req.name
            fail_keys.clear()
            fail_keys.update(failing)
            tally.injected_planned += len(failing)
            writes = [(layer, req) for layer in range(LAYERS) for req in requests]  # layer order, as a forward
            action = rng.choices(action_names, action_weights)[0]
            tally.actions[action] = tally.actions.get(action, 0) + 1
            stop_at = rng.randint(0, len(writes))  # where a cancel or an abort comes
            victim = rng.choice(requests)
            use_gate = action == "deadline_then_abort" or (action == "deadline_then_wait" and rng.random() < 0.5)
            for cache in caches:
                cache.normal_(generator=gen)  # no task of the previous cycle can still read it
            failed_before = len(store.refused)

            # --- run ----------------------------------------------------------------------------
            writer.init()
            gate = Gate() if use_gate else None
            if gate is not None:
                writer.submit(gate, label="gate")
            cancelled: set[str] = set()
            aborted = False
            reported = 0
            for i, (layer, req) in enumerate(writes):
                if i == stop_at and action == "cancel":
                    tally.cancelled_tasks += writer.cancel_request(victim.name)
                    cancelled.add(victim.name)
                if i == stop_at and action == "abort":
                    break
                if req.name in cancelled:
                    continue  # a cancelled request writes nothing more
                kvdump.write_cache_store(writer, layer, caches[layer], req.block_ids, req.hashes, request=req.name)
            else:
                if stop_at == len(writes) and action == "cancel":
                    tally.cancelled_tasks += writer.cancel_request(victim.name)
                    cancelled.add(victim.name)

            write_error: kvdump.WriteError | None = None
            if action == "abort":
                report = writer.abort(LIMIT)
                aborted = True
            elif action.startswith("deadline_then_"):
                try:
                    writer.wait_all_done(0)
                    open_after_deadline = False
                except kvdump.WriteTimeout:
                    tally.zero_deadline_timeouts += 1
                    open_after_deadline = True
                except kvdump.WriteError as err:
                    write_error, open_after_deadline = err, False
                # The gate holds the cycle open, so the 0 s barrier cannot have closed it.
                assert open_after_deadline or gate is None, f"cycle {cycle}: 0 s barrier passed a held gate"
                if gate is not None:
                    gate.release.set()
                if open_after_deadline and action == "deadline_then_abort":
                    report = writer.abort(LIMIT)
                    aborted = True
                elif open_after_deadline:
                    try:
                        writer.wait_all_done(LIMIT)
                    except kvdump.WriteError as err:
                        write_error = err
            else:
                try:
                    writer.wait_all_done(LIMIT)
                except kvdump.WriteError as err:
                    write_error = err
            assert writer.state == "idle", f"cycle {cycle}: writer left {writer.state}"

            # --- account ------------------------------------------------------------------------
            failed_now = store.refused[failed_before:]
            assert set(failed_now) <= set(failing), f"cycle {cycle}: failed a key it was not told to"
            failed_requests = {failing[k] for k in failed_now}
            if aborted:
                assert report["abandoned"] == 0, f"cycle {cycle}: abort abandoned {report}"
                reported += report["failed"]
                tally.aborted_cycles += 1
            if write_error is not None:
                reported += write_error.failed
                assert set(write_error.failed_requests) == failed_requests, f"cycle {cycle}: {write_error}"
                assert write_error.code == kvdump.StatusCode.IO_ERROR
                assert write_error.key in failing
            elif not aborted:
                assert not failed_requests, f"cycle {cycle}: failures {failed_now} went unreported"
            assert reported == len(failed_now), f"cycle {cycle}: {len(failed_now)} put(s) failed, {reported} reported"
            tally.reported += reported
            tally.cancelled_requests += len(cancelled)

            for req in requests:
                req.publishable = not aborted and req.name not in cancelled and req.name not in failed_requests
                # Read right away too, so that a wrong publication names its cycle.
                found = kvdump.lookup(inner, req.hashes, num_layers=LAYERS)
                assert found == (BLOCKS_PER_REQUEST if req.publishable else 0), (
                    f"cycle {cycle} ({action}): {req.name} publishable={req.publishable} but lookup={found}"
                )
                if req.publishable:
                    for layer in range(LAYERS):
                        for block_hash, block_id in zip(req.hashes, req.block_ids):
                            expected[(block_hash, layer)] = caches[layer][:, block_id].clone()
            all_requests.extend(requests)
            tally.cycles += 1
        stats = writer.stats()
    finally:
        writer.close(LIMIT)

    # --- the whole soak, from the store ---------------------------------------------------------
    tally.requests = len(all_requests)
    injected = len(store.refused)
    published = [req for req in all_requests if kvdump.lookup(inner, req.hashes, num_layers=LAYERS) > 0]
    tally.published = len(published)
    published_names = {req.name for req in published}
    unpublishable_seen = [req.name for req in published if not req.publishable]
    missing = [req.name for req in all_requests if req.publishable and req.name not in published_names]

    hashes = [h for req in published for h in req.hashes]
    loader = kvdump.KVLoader(inner, num_threads=2)
    try:
        for layer in range(LAYERS):
            dst = torch.zeros((2, len(hashes), *BLOCK))
            loader.load(layer, dst, list(range(len(hashes))), hashes)
            want = torch.stack([expected[(h, layer)] for h in hashes], dim=1)
            differ = (bits(dst) != bits(want)).flatten(2).any(dim=2).any(dim=0)
            assert not differ.any(), f"layer {layer}: {int(differ.sum())} published block(s) load different bytes"
    finally:
        loader.close()

    print(
        f"\nfault-injection soak: {tally.cycles} cycles, {tally.requests} requests; injected failures "
        f"{injected} (planned {tally.injected_planned}), reported {tally.reported}; published {tally.published} "
        f"requests ({len(hashes)} blocks x {LAYERS} layers loaded bit-identical); aborted cycles "
        f"{tally.aborted_cycles}; cancelled requests {tally.cancelled_requests} ({tally.cancelled_tasks} queued "
        f"tasks dropped); 0 s barriers that timed out {tally.zero_deadline_timeouts}; actions {tally.actions}"
    )
    assert tally.cycles == CYCLES
    assert injected == tally.reported
    assert stats["failed"] == injected and stats["abandoned"] == 0
    assert injected > 0.5 * FAILURE_RATE * LAYERS * tally.requests  # the plan did inject
    assert not unpublishable_seen, f"published but must not be: {unpublishable_seen[:10]}"
    assert not missing, f"publishable but not published: {missing[:10]}"
    assert tally.published > 0.3 * tally.requests
    assert tally.aborted_cycles > 0 and tally.cancelled_requests > 0 and tally.zero_deadline_timeouts > 0


@pytest.mark.parametrize(
    "abort_deadline",
    [pytest.param(LIMIT, id="commit-finishes-within-the-abort"), pytest.param(0.0, id="commit-abandoned")],
)
def test_abort_after_a_barrier_timeout_in_the_commit_phase_publishes_nothing(abort_deadline: float) -> None:
    # Only the commit-record put is held: the block puts finish, so the barrier reaches the commit phase.
    store = StallingStore(
        kvdump.MemoryStore(capacity_bytes=1 << 20), holds_put=lambda key: key.endswith("/commit"), holds_get=no_key
    )
    writer = kvdump.AsyncWriter(store, num_threads=2)
    try:
        writer.init()
        kvdump.write_cache_store(writer, 0, torch.randn(2, 2, *BLOCK), [0, 1], [11, 12], request="r")
        # Each 0 s barrier times out; once every write finished, one of them queues the commit task,
        # and the loop ends when that task is inside the store's put. The bound only guards a hang.
        for _ in range(100_000):
            if store.entered.is_set():
                break
            with pytest.raises(kvdump.WriteTimeout):
                writer.wait_all_done(0)
        assert store.entered.is_set(), "the commit task never started"
        assert writer.state == "draining"

        def release_once_aborting() -> None:
            for _ in range(100_000):
                if writer.state != "draining":
                    break
                threading.Event().wait(0.0005)
            store.release.set()

        releaser = threading.Thread(target=release_once_aborting)
        releaser.start()
        report = writer.abort(abort_deadline)
        releaser.join(LIMIT)
        store.release.set()
        assert writer.state == "idle"
        # An abandoned commit put lands after abort() returned; a new cycle waits it out.
        writer.init()
        writer.wait_all_done(LIMIT)
        for _ in range(20_000):
            if writer.stats()["threads_in_abandoned_calls"] == 0:
                break
            threading.Event().wait(0.0005)
        assert writer.stats()["threads_in_abandoned_calls"] == 0, "the abandoned commit put never returned"
        assert report["finished_running"] + report["abandoned"] == 1
        assert kvdump.lookup(store.inner, [11, 12], num_layers=1) == 0, "an aborted cycle was published"
    finally:
        store.release.set()
        writer.close(LIMIT)

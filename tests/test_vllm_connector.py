"""KvdumpConnector against the real vLLM 0.32.0 scheduler (see kvdump.testing.vllm_harness for what runs)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from vllm.v1.request import RequestStatus

import kvdump
from kvdump.config import ConfigError
from kvdump.hashing import full_block_hashes, model_salt
from kvdump.integrations.vllm import KvdumpConnector, parse_settings
from kvdump.integrations.vllm.shared_stores import forget_store, provide_store
from kvdump.testing import FailingStore, StallingStore, every_key, no_key
from kvdump.testing.vllm_harness import VllmEngine, Worker, stand_in_kv, write_model_dir

NS = "vllm-test"
MODEL_NAME = "stand-in-llama"  # kv_connector_extra_config.model_name: every test engine salts alike
BLOCK = 16


def chain(prompt: list[int]) -> list[int]:
    return full_block_hashes(prompt, BLOCK, model_salt(MODEL_NAME, "float32"))


def committed(store: kvdump.CacheStore, prompt: list[int], layers: int = 2, tp_rank: int = 0, tp_size: int = 1) -> int:
    return kvdump.lookup(store, chain(prompt), key_space=kvdump.KeySpace(NS, tp_rank, tp_size), num_layers=layers)


def snapshot(worker: Worker, block_ids: list[int]) -> list[list[torch.Tensor]]:
    return [[worker.block(layer, b).clone() for b in block_ids] for layer in range(len(worker.engine.layer_names))]


def same_as_snapshot(worker: Worker, block_ids: list[int], shot: list[list[torch.Tensor]]) -> bool:
    return all(
        torch.equal(worker.block(layer, b), shot[layer][i])
        for layer in range(len(shot))
        for i, b in enumerate(block_ids)
    )


def prompt_of(length: int, seed: int = 1) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 999, (length,), generator=g).tolist()


@pytest.fixture
def engines() -> list[VllmEngine]:
    made: list[VllmEngine] = []
    yield made
    for engine in made:
        engine.shutdown()


class _Stores:
    """Stores the connectors of a test reach by URL (they share one store per URL per process)."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.stores: list[kvdump.CacheStore] = []

    def provide(self, store: kvdump.CacheStore) -> str:
        """A URL of its own under which connectors find ``store``."""
        url = f"memory://test-{uuid.uuid4().hex}"
        provide_store(url, store)
        self.stores.append(store)
        return self.forget_later(url)

    def forget_later(self, url: str) -> str:
        """``url``, dropped from the process's shared stores when the test ends."""
        self.urls.append(url)
        return url


@pytest.fixture
def stores(engines: list[VllmEngine]):  # type: ignore[no-untyped-def]
    """Torn down before ``engines``: a gated store is released first, so no engine waits on it."""
    made = _Stores()
    yield made
    for store in made.stores:
        release = getattr(store, "release", None)
        if release is not None:
            release.set()
    for url in made.urls:
        forget_store(url)


@pytest.fixture
def store_url(stores: _Stores) -> str:
    """A fresh in-process store under a URL of its own."""
    return stores.provide(kvdump.MemoryStore(capacity_bytes=64 << 20))


def make(engines: list[VllmEngine], tmp_path: Path, url: str, **kwargs: object) -> VllmEngine:
    extra = {"store_url": url, "namespace": NS, "model_name": MODEL_NAME, "save_timeout": 30.0, "load_timeout": 30.0}
    extra.update(kwargs.pop("extra", {}))  # type: ignore[arg-type]
    engine = VllmEngine(tmp_path / f"e{len(engines)}", extra, **kwargs)  # type: ignore[arg-type]
    engines.append(engine)
    return engine


# -- the main flow ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["flash_attn", "flash_infer", "mla"])
def test_shared_prefix_loads_bit_identical_into_other_blocks(tmp_path, store_url, engines, layout):
    engine = make(engines, tmp_path, store_url, layout=layout)
    worker = engine.workers[0]
    prompt = prompt_of(59)
    engine.add("a", prompt)
    engine.step()
    a_blocks = list(worker.tables["a"][:3])
    shot = snapshot(worker, a_blocks)
    engine.run()
    assert committed(engine.workers[0].connector._worker.writer.store, prompt) == 3  # 59 tokens: 3 full blocks

    engine.add("b", prompt + [5, 6, 7, 8, 9])
    so = engine.step()
    new = so.scheduled_new_reqs[0]
    assert new.num_computed_tokens == 48  # the committed prefix, from the store
    b_blocks = list(worker.tables["b"][:3])
    assert b_blocks != a_blocks
    assert same_as_snapshot(worker, b_blocks, shot)
    engine.run()
    assert not engine.invalid_block_ids
    totals = worker.connector.stats_totals()
    assert totals["loads"] == 3 * 2 and totals["load_failures"] == 0
    assert engine.connector.stats_totals()["hit_tokens"] == 48


def test_last_prompt_token_is_never_matched(tmp_path, store_url, engines):
    engine = make(engines, tmp_path, store_url)
    prompt = prompt_of(64)  # exactly four full blocks
    engine.add("a", prompt)
    engine.run()
    assert committed(engine.workers[0].connector._worker.writer.store, prompt) == 4
    engine.add("b", prompt)
    so = engine.step()
    # The fourth block holds the last prompt token, which vLLM must compute to sample from.
    assert so.scheduled_new_reqs[0].num_computed_tokens == 48
    assert so.num_scheduled_tokens["b"] == 16


def test_block_saved_from_one_layout_loads_into_another(tmp_path, store_url, engines):
    prompt = prompt_of(50, seed=3)
    source = make(engines, tmp_path, store_url, layout="flash_attn", role="kv_producer")
    source.add("a", prompt)
    source.step()
    shot = snapshot(source.workers[0], source.workers[0].tables["a"][:3])
    source.run()
    target = make(engines, tmp_path, store_url, layout="flash_infer", role="kv_consumer")
    target.add("a", prompt)
    target.step()
    # FlashAttention's block [2, bs, heads, dim] and FlashInfer's [2, bs, heads, dim] views agree.
    assert same_as_snapshot(target.workers[0], target.workers[0].tables["a"][:3], shot)


def test_chunked_prefill_commits_each_chunk(tmp_path, store_url, engines):
    engine = make(engines, tmp_path, store_url, max_num_batched_tokens=40)
    prompt = prompt_of(100, seed=4)
    engine.add("a", prompt)
    store = engine.workers[0].connector._worker.writer.store
    engine.step()  # tokens 0..39: blocks 0 and 1 complete
    assert committed(store, prompt) == 2
    engine.step()  # tokens 40..79: blocks 2..4 complete
    assert committed(store, prompt) == 5
    engine.run()
    assert committed(store, prompt) == 6


def test_roles_producer_saves_only_and_consumer_loads_only(tmp_path, store_url, engines):
    prompt = prompt_of(40, seed=5)
    consumer = make(engines, tmp_path, store_url, role="kv_consumer")
    consumer.add("a", prompt)
    consumer.run()
    assert consumer.workers[0].connector._worker.writer is None
    assert consumer.workers[0].connector.stats_totals()["saves"] == 0
    producer = make(engines, tmp_path, store_url, role="kv_producer")
    producer.add("a", prompt)
    producer.run()
    assert producer.connector.stats_totals()["lookups"] == 0
    assert producer.workers[0].connector._worker.loader is None


# -- failures ---------------------------------------------------------------------------------------


def test_failed_save_is_reported_and_nothing_of_it_committed(tmp_path, engines, stores, caplog):
    good, bad = prompt_of(40, seed=6), prompt_of(40, seed=7)
    bad_key = kvdump.KeySpace(NS).block_key(chain(bad)[1], 1)
    store = FailingStore(
        kvdump.MemoryStore(capacity_bytes=64 << 20),
        lambda key: bad_key in key,
        error=lambda key: kvdump.StoreError("injected put failure", key=key),
    )
    url = stores.provide(store)
    engine = make(engines, tmp_path, url)
    engine.add("good", good)
    engine.add("bad", bad)
    with caplog.at_level("ERROR", logger="kvdump.vllm"):
        engine.run()
    assert "bad" in caplog.text
    assert committed(store, good) == 2
    assert committed(store, bad) == 0  # block 0 stored, but the request failed: nothing published
    assert engine.workers[0].connector.stats_totals()["save_failures"] == 1
    assert all(r.is_finished() for r in engine.requests.values())
    # The engine goes on: the next request saves and commits.
    engine.add("after", prompt_of(40, seed=8))
    engine.run()
    assert committed(store, prompt_of(40, seed=8)) == 2


def test_missing_and_corrupt_blocks_are_load_errors_and_the_rest_loads(tmp_path, store_url, engines):
    engine = make(engines, tmp_path, store_url)
    worker = engine.workers[0]
    prompt = prompt_of(80, seed=9)
    engine.add("a", prompt)
    engine.step()
    shot = snapshot(worker, worker.tables["a"][:4])
    engine.run()
    store = worker.connector._worker.writer.store
    hashes = chain(prompt)
    assert kvdump.CacheStore.remove(store, kvdump.KeySpace(NS).block_key(hashes[2], 1))
    key = kvdump.KeySpace(NS).block_key(hashes[3], 0)
    record = bytearray(kvdump.CacheStore.get(store, key))
    record[-1] ^= 0xFF
    kvdump.CacheStore.remove(store, key)
    kvdump.CacheStore.put(store, key, bytes(record))

    engine.add("b", prompt)
    so = engine.step()
    b_blocks = list(worker.tables["b"])
    assert so.scheduled_new_reqs[0].num_computed_tokens == 64  # the records still say 4 blocks
    assert engine.invalid_block_ids == {b_blocks[2], b_blocks[3]}
    assert same_as_snapshot(worker, b_blocks[:2], [layer[:2] for layer in shot])
    assert worker.connector.stats_totals()["load_failures"] == 2
    engine.run()  # vLLM recomputes from the first bad block and finishes
    assert engine.requests["b"].is_finished()


def stalled_store(holds_put: Callable[[str], bool], holds_get: Callable[[str], bool]) -> StallingStore:
    """A stalled remote store: the calls it holds wait up to 60 s for ``release``, then go through."""
    return StallingStore(holds_put=holds_put, holds_get=holds_get, limit=60, fails_at_limit=False)


def engine_with_a_committed_prompt(
    tmp_path: Path, engines: list[VllmEngine], stores: _Stores, store: StallingStore, extra: dict, seed: int
) -> tuple[VllmEngine, list[int]]:
    """An engine on ``store`` that has saved and committed request "a"'s prompt, ``store`` letting
    every call through meanwhile; the caller stalls it again."""
    store.stalling = False
    engine = make(engines, tmp_path, stores.provide(store), extra=extra)
    prompt = prompt_of(64, seed=seed)
    engine.add("a", prompt)
    engine.run()
    return engine, prompt


def test_stalled_store_is_reported_within_the_deadline_and_blocks_reused_safely(tmp_path, engines, stores):
    first = prompt_of(64, seed=10)
    stalled = [f"/{h & (2**64 - 1):016x}/" for h in chain(first)]
    store = stalled_store(lambda key: any(part in key for part in stalled), no_key)
    url = stores.provide(store)
    engine = make(engines, tmp_path, url, num_blocks=8, extra={"save_timeout": 0.5})
    worker = engine.workers[0]
    engine.add("a", first)
    started = time.monotonic()
    engine.run()
    # Bounded by the deadline, not by the stalled store (which would hold it for 60 s).
    assert time.monotonic() - started < 30
    assert worker.connector.stats_totals()["save_failures"] == 1
    # The request finished and its blocks went back to vLLM; another request now overwrites them.
    second = prompt_of(64, seed=11)
    engine.add("b", second)
    engine.run()
    store.release.set()
    deadline = time.monotonic() + 30
    while worker.connector._worker.writer.stats()["threads_in_abandoned_calls"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert committed(store, first) == 0
    # Whatever the abandoned task put under a's keys holds a's values, never b's.
    for index, block_hash in enumerate(chain(first)):
        raw = kvdump.CacheStore.get(store.inner, kvdump.KeySpace(NS).block_key(block_hash, 0))
        if raw is None:
            continue
        expected = stand_in_kv(0, 0, first, index * BLOCK, (index + 1) * BLOCK, (2, 2, 16))
        payload = torch.frombuffer(bytearray(raw[64:]), dtype=torch.float32).reshape(2, BLOCK, 2, 16)
        assert torch.allclose(payload.transpose(0, 1), expected, atol=1e-6)
    assert committed(store, second) == 4


def test_stalled_loads_are_reported_within_the_deadline_and_recomputed(tmp_path, engines, stores):
    store = stalled_store(no_key, lambda key: "/L" in key)  # the block reads, not the commit records
    engine, prompt = engine_with_a_committed_prompt(tmp_path, engines, stores, store, {"load_timeout": 0.5}, seed=18)
    assert committed(store, prompt) == 4
    store.stalling = True
    engine.add("b", prompt)
    started = time.monotonic()
    so = engine.step()
    assert time.monotonic() - started < 30  # bounded by load_timeout, not the 60 s stall
    assert so.scheduled_new_reqs[0].num_computed_tokens == 48
    b_blocks = engine.workers[0].tables["b"]
    assert engine.invalid_block_ids == set(b_blocks[:3])
    store.release.set()
    store.stalling = False
    engine.run()
    assert engine.requests["b"].is_finished()


def test_stalled_lookup_is_a_miss_by_the_deadline_and_never_queues_behind_itself(tmp_path, engines, stores):
    store = stalled_store(no_key, every_key)
    engine, prompt = engine_with_a_committed_prompt(tmp_path, engines, stores, store, {"lookup_timeout": 0.3}, seed=19)
    store.stalling = True
    request = engine.add("b", prompt)
    started = time.monotonic()
    assert engine.connector.get_num_new_matched_tokens(request, 0) == (0, False)
    assert engine.connector.get_num_new_matched_tokens(request, 0) == (0, False)  # at once
    assert time.monotonic() - started < 30
    assert engine.connector.stats_totals()["lookup_failures"] == 2
    store.release.set()
    store.stalling = False
    engine.scheduler.finish_requests("b", RequestStatus.FINISHED_ABORTED)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the stalled call returns once the store does
        again = engine.add(f"c{time.monotonic_ns()}", prompt)
        found = engine.connector.get_num_new_matched_tokens(again, 0)
        engine.scheduler.finish_requests(again.request_id, RequestStatus.FINISHED_ABORTED)
        if found == (48, False):
            break
        time.sleep(0.01)
    assert found == (48, False)


def test_preempted_request_never_stores_reused_blocks_under_its_keys(tmp_path, store_url, engines):
    # 10 blocks for two 64-token prompts that each grow by 40 tokens: the scheduler must preempt one.
    engine = make(engines, tmp_path, store_url, num_blocks=10)
    prompts = {"a": prompt_of(64, seed=12), "b": prompt_of(64, seed=13)}
    for name, prompt in prompts.items():
        engine.add(name, prompt, max_tokens=40)
    engine.run(max_steps=200)
    preempted = sum(r.num_preemptions for r in engine.requests.values())
    assert preempted >= 1
    store = engine.workers[0].connector._worker.writer.store
    loader = kvdump.KVLoader(store, key_space=kvdump.KeySpace(NS), num_threads=1)
    try:
        for prompt in prompts.values():
            count = committed(store, prompt)
            assert count == 4
            scratch = torch.zeros(2, count, BLOCK, 2, 16)
            for layer in range(2):
                loader.load(layer, scratch, list(range(count)), chain(prompt)[:count])
                expected = stand_in_kv(0, layer, prompt, 0, count * BLOCK, (2, 2, 16))
                got = scratch.permute(1, 2, 0, 3, 4).reshape(count * BLOCK, 2, 2, 16)
                assert torch.allclose(got, expected, atol=1e-6)
    finally:
        loader.close()


def test_aborted_request_commits_only_complete_chunks_and_frees_its_state(tmp_path, store_url, engines):
    engine = make(engines, tmp_path, store_url, max_num_batched_tokens=40)
    prompt = prompt_of(120, seed=14)
    engine.add("a", prompt)
    engine.step()
    engine.scheduler.finish_requests("a", RequestStatus.FINISHED_ABORTED)
    engine.run()
    store = engine.workers[0].connector._worker.writer.store
    assert committed(store, prompt) == 2
    assert engine.connector._scheduler._requests == {}
    engine.add("again", prompt)
    so = engine.step()
    assert so.scheduled_new_reqs[0].num_computed_tokens == 32


def test_two_tp_ranks_store_their_own_shards_and_need_each_other(tmp_path, store_url, engines):
    engine = make(engines, tmp_path, store_url, tp_size=2)
    prompt = prompt_of(40, seed=15)
    engine.add("a", prompt)
    engine.step()
    shots = [snapshot(w, w.tables["a"][:2]) for w in engine.workers]
    assert not torch.equal(shots[0][0][0], shots[1][0][0])  # the ranks hold different shards
    engine.run()
    store = engine.workers[0].connector._worker.writer.store
    assert [committed(store, prompt, tp_rank=r, tp_size=2) for r in (0, 1)] == [2, 2]
    engine.add("b", prompt)
    so = engine.step()
    assert so.scheduled_new_reqs[0].num_computed_tokens == 32
    for worker, shot in zip(engine.workers, shots, strict=True):
        assert same_as_snapshot(worker, worker.tables["b"][:2], shot)
    engine.run()
    # Without rank 1's commit record of block 1, only block 0 is usable.
    kvdump.CacheStore.remove(store, kvdump.KeySpace(NS, 1, 2).commit_key(chain(prompt)[1], 0, 2))
    engine.add("c", prompt)
    so = engine.step()
    assert so.scheduled_new_reqs[0].num_computed_tokens == 16


# -- PD across processes --------------------------------------------------------------------------

_PREFILL = """
import json
from pathlib import Path
from kvdump.testing.vllm_harness import VllmEngine
extra = json.loads({extra!r})
engine = VllmEngine(Path({tmp!r}), extra, role="kv_producer", model_dir=Path({model!r}))
prompt = json.loads({prompt!r})
engine.add("p", prompt)
so = engine.step()
worker = engine.workers[0]
table = worker.tables["p"][:3]
blocks = [[worker.block(layer, b).tolist() for b in table] for layer in range(2)]
engine.run()
engine.shutdown()
Path({out!r}).write_text(json.dumps(blocks))
"""


def _pd_across_processes(tmp_path: Path, url: str, engines: list[VllmEngine]) -> None:
    model = write_model_dir(tmp_path / "model", 2, 2, 16)
    prompt = prompt_of(60, seed=16)
    extra = {"store_url": url, "namespace": NS}
    out = tmp_path / "prefill_blocks.json"
    script = _PREFILL.format(
        extra=json.dumps(extra),
        tmp=str(tmp_path / "prefill"),
        model=str(model),
        prompt=json.dumps(prompt),
        out=str(out),
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=240)
    prefill_blocks = json.loads(out.read_text())
    decode = VllmEngine(tmp_path / "decode", extra, role="kv_consumer", model_dir=model)
    engines.append(decode)
    decode.add("d", prompt)
    so = decode.step()
    assert so.scheduled_new_reqs[0].num_computed_tokens == 48
    worker = decode.workers[0]
    for layer in range(2):
        for i, block_id in enumerate(worker.tables["d"][:3]):
            assert torch.equal(worker.block(layer, block_id), torch.tensor(prefill_blocks[layer][i]))
    decode.run()


def test_prefill_and_decode_in_two_processes_over_file_store(tmp_path, engines, stores):
    _pd_across_processes(tmp_path, stores.forget_later(f"file://{tmp_path / 'kv'}"), engines)


def test_prefill_and_decode_in_two_processes_over_mooncake(tmp_path, engines, stores, mooncake_cluster):
    url = mooncake_cluster.url(global_segment_size=0, local_buffer_size=64 << 20)
    _pd_across_processes(tmp_path, stores.forget_later(url), engines)


# -- config and metrics ---------------------------------------------------------------------------


def test_fp8_caches_are_stored_as_fp8_bytes_and_other_quantized_caches_refused(tmp_path):
    from kvdump.integrations.vllm.layouts import element_view, layer_cache

    assert element_view("auto") is None
    assert element_view("fp8") == torch.float8_e4m3fn and element_view("fp8_e5m2") == torch.float8_e5m2
    with pytest.raises(kvdump.UnsupportedError, match="int8_per_token_head"):
        element_view("int8_per_token_head")
    raw = torch.randint(0, 256, (2, 4, BLOCK, 2, 16), dtype=torch.uint8)
    cache = layer_cache(raw, "auto", element_view("fp8"))
    assert cache.kv.dtype == torch.float8_e4m3fn and cache.kv.data_ptr() == raw.data_ptr()
    assert cache.payload_bytes_per_block == 2 * BLOCK * 2 * 16
    store = kvdump.FileStore(str(tmp_path / "kv"))
    writer = kvdump.AsyncWriter(store, num_threads=1, key_space=kvdump.KeySpace(NS))
    try:
        with writer.cycle():
            kvdump.write_cache_store(writer, 0, cache.kv, [1, 3], [11, 13], request="r")
    finally:
        writer.close()
    target = torch.zeros(2, 4, BLOCK, 2, 16, dtype=torch.uint8)
    kvdump.load_cache_store(
        store, 0, layer_cache(target, "auto", torch.float8_e4m3fn).kv, [0, 2], [11, 13], key_space=kvdump.KeySpace(NS)
    )
    assert torch.equal(target[:, [0, 2]], raw[:, [1, 3]])


def test_unknown_layers_are_ignored_and_an_unusable_cache_fails_only_its_save(tmp_path, store_url, engines):
    from kvdump.integrations.vllm import BlockRun, KvdumpConnectorMetadata

    engine = make(engines, tmp_path, store_url)
    connector = engine.workers[0].connector
    store = connector._worker.writer.store
    prompt = prompt_of(32, seed=20)
    hashes = chain(prompt)
    connector.bind_connector_metadata(KvdumpConnectorMetadata(saves=[BlockRun("r", [1, 2], hashes)]))
    connector.save_kv_layer("draft.layers.0.attn", torch.zeros(2, 4, BLOCK, 2, 16), None)  # not ours
    connector.save_kv_layer(engine.layer_names[0], engine.workers[0].caches[engine.layer_names[0]], None)
    connector.save_kv_layer(engine.layer_names[1], torch.zeros(2, 64, BLOCK, 2, 16, dtype=torch.int32), None)
    connector.wait_for_save()
    connector.clear_connector_metadata()
    assert connector.stats_totals()["save_failures"] == 1
    assert committed(store, prompt) == 0
    # A cache the ops cannot even describe, at the first layer: the later layers store, nothing commits.
    connector.bind_connector_metadata(KvdumpConnectorMetadata(saves=[BlockRun("r", [1, 2], hashes)]))
    connector.save_kv_layer(engine.layer_names[0], torch.zeros(3, 64, BLOCK, 2, 16), None)
    connector.save_kv_layer(engine.layer_names[1], engine.workers[0].caches[engine.layer_names[1]], None)
    connector.wait_for_save()
    connector.clear_connector_metadata()
    assert connector.stats_totals()["save_failures"] == 2
    assert committed(store, prompt) == 0
    # The next step saves normally.
    connector.bind_connector_metadata(KvdumpConnectorMetadata(saves=[BlockRun("r", [1, 2], hashes)]))
    for name in engine.layer_names:
        connector.save_kv_layer(name, engine.workers[0].caches[name], None)
    connector.wait_for_save()
    connector.clear_connector_metadata()
    assert committed(store, prompt) == 2


def test_layouts_are_detected_and_an_ambiguous_or_unknown_shape_is_refused_by_name():
    from kvdump.integrations.vllm.layouts import layer_cache

    assert layer_cache(torch.zeros(2, 5, BLOCK, 2, 16)).layout == "flash_attn"
    assert layer_cache(torch.zeros(5, 2, BLOCK, 2, 16)).layout == "flash_infer"
    assert layer_cache(torch.zeros(5, BLOCK, 576)).layout == "mla"
    with pytest.raises(kvdump.KvdumpValueError, match="kv_layout"):
        layer_cache(torch.zeros(2, 2, BLOCK, 2, 16))  # two blocks: K/V first or second?
    assert layer_cache(torch.zeros(2, 2, BLOCK, 2, 16), "flash_infer").v is not None
    with pytest.raises(kvdump.KvdumpValueError, match="unsupported KV cache shape"):
        layer_cache(torch.zeros(3, 5, BLOCK, 2, 16))
    with pytest.raises(kvdump.KvdumpValueError, match="flash_attn"):
        layer_cache(torch.zeros(5, 2, BLOCK, 2, 16), "flash_attn")


def test_metadata_travels_to_workers_without_its_tensors():
    import pickle

    from kvdump.integrations.vllm import BlockRun, KvdumpConnectorMetadata

    run = BlockRun("r", [4, 5], [-1, 2**63 - 1])
    run.tensors()  # built on a worker; never sent back and forth
    meta = KvdumpConnectorMetadata(loads=[run], saves=[BlockRun("s", [1], [7])], preempted={"p"})
    copy = pickle.loads(pickle.dumps(meta))
    assert copy == meta
    assert copy.loads[0]._tensors is None
    ids, hashes = copy.loads[0].tensors()
    assert ids.tolist() == [4, 5] and hashes.tolist() == [-1, 2**63 - 1]


def test_extra_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="kv_connector_extra_config.store_url"):
        parse_settings({})
    with pytest.raises(ConfigError, match="kv_connector_extra_config.num_thread"):
        parse_settings({"store_url": "memory://", "num_thread": 2})
    with pytest.raises(ConfigError, match="kv_connector_extra_config.save_timeout"):
        parse_settings({"store_url": "memory://", "save_timeout": -1})
    with pytest.raises(ConfigError, match="kv_connector_extra_config.kv_layout"):
        parse_settings({"store_url": "memory://", "kv_layout": "paged"})
    with pytest.raises(ConfigError, match=r"extra_config\.num_threads: expected an integer in \[1, 1024\], got true"):
        parse_settings({"store_url": "memory://", "num_threads": True})
    with pytest.raises(ConfigError, match=r"kv_connector_extra_config\.tp_rank: expected an integer in \[0, 2\)"):
        parse_settings({"store_url": "memory://", "tp_rank": 2, "tp_size": 2})
    settings = parse_settings(
        {"store_url": "file:///srv/kv", "store_options": {"fsync": True}, "staging_bytes": "1MiB"}
    )
    assert settings.resolved_store_url == "file:///srv/kv?fsync=true"
    assert settings.staging_bytes == 1 << 20
    assert settings.writer_kwargs() == {
        "num_threads": None,
        "queue_capacity": 1024,
        "submit_timeout": 30.0,
        "staging_bytes": 1 << 20,
        "staging_timeout": 30.0,
        "worker_nice": 0,
        "idle_poll": 0.0005,
    }
    with pytest.raises(ConfigError, match=r"extra_config\.idle_poll: expected a number of seconds in \[0, 1\]"):
        parse_settings({"store_url": "memory://", "idle_poll": 2})


def test_stats_reach_vllm_and_reduce(tmp_path, store_url, engines):
    engine = make(engines, tmp_path, store_url)
    prompt = prompt_of(40, seed=17)
    engine.add("a", prompt)
    engine.run()
    engine.add("b", prompt)
    engine.run()
    stats = KvdumpConnector.build_kv_connector_stats(engine.workers[0].connector.stats_totals())
    reduced = stats.reduce()
    assert reduced["saves"] == 2 * 2 and reduced["loads"] == 2 * 2
    assert reduced["save_bytes"] == 4 * 2 * BLOCK * 2 * 16 * 4
    assert reduced["barrier_waits"] >= 1 and reduced["barrier_wait_ms_avg"] >= 0
    scheduler = KvdumpConnector.build_kv_connector_stats(engine.connector.stats_totals()).reduce()
    assert scheduler["hit_tokens"] == 32 and scheduler["lookups"] == 2
    assert not stats.is_empty()


def test_importing_kvdump_or_its_testing_aids_does_not_import_vllm():
    code = "import sys, kvdump, kvdump.integrations, kvdump.testing; assert 'vllm' not in sys.modules, 'vllm imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

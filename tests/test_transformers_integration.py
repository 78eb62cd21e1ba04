"""The Hugging Face transformers integration: a randomly initialised Llama (no downloads) prefills
through kvdump, and a second model instance continues generation from the KV it loads back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

import kvdump
from kvdump.hashing import block_hashes
from kvdump.integrations.transformers import KvdumpCache, load_into_cache, model_salt_of, prefill_to_store
from kvdump.testing import FailingStore, StallingStore, block_keys, no_key

BLOCK_SIZE = 8
NUM_LAYERS = 3
NEW_TOKENS = 8
PROMPT_WITH_TAIL = 37  # 4 full blocks and a partial one
SEED = 1234


def tiny_llama_config() -> LlamaConfig:
    # Grouped-query attention (4 query heads share 2 KV heads), so the stored layout is the KV heads'.
    return LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.1,  # peaked enough logits that greedy decoding is not a coin toss
        bos_token_id=None,
        eos_token_id=None,  # no early stop: every comparison covers NEW_TOKENS tokens
        pad_token_id=None,
    )


def make_model(dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(SEED)
    return LlamaForCausalLM(tiny_llama_config()).to(dtype).eval()


def twin(model: LlamaForCausalLM) -> LlamaForCausalLM:
    """A separate instance with the same weights: the decode worker's copy of the model."""
    other = LlamaForCausalLM(model.config).to(model.dtype).eval()
    other.load_state_dict(model.state_dict())
    return other


def prompt(length: int, seed: int = 7) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, length), generator=generator)


def greedy(model: LlamaForCausalLM, ids: torch.Tensor, **kwargs: object) -> list[int]:
    # An explicit all-ones mask: left to itself, generate would guess one from a pad token id and
    # mask out prompt tokens that happen to equal it.
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False, **kwargs
        )
    return out[0, ids.shape[1] :].tolist()


def hf_prompt_cache(model: LlamaForCausalLM, ids: torch.Tensor):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model(ids, use_cache=True).past_key_values


@pytest.fixture
def store() -> kvdump.MemoryStore:
    return kvdump.MemoryStore(capacity_bytes=16 << 20)


@pytest.fixture
def writer(store: kvdump.MemoryStore):  # type: ignore[no-untyped-def]
    with kvdump.AsyncWriter(store, num_threads=2) as w:
        yield w


def test_importing_kvdump_does_not_import_transformers() -> None:
    check = "import sys, kvdump, kvdump.integrations; assert 'transformers' not in sys.modules, 'imported'"
    result = subprocess.run([sys.executable, "-c", check], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_stores_every_layer_of_every_full_block(
    dtype: torch.dtype, store: kvdump.MemoryStore, writer: kvdump.AsyncWriter
) -> None:
    model = make_model(dtype)
    ids = prompt(PROMPT_WITH_TAIL)
    result = prefill_to_store(model, ids, writer, BLOCK_SIZE, request="req-0")

    chain = block_hashes(ids[0].tolist(), BLOCK_SIZE, model_salt_of(model))  # the last hash is the partial block's
    full = PROMPT_WITH_TAIL // BLOCK_SIZE
    assert result.block_hashes == chain[:full]
    for h in chain[:full]:
        for layer in range(NUM_LAYERS):
            assert store.exists(kvdump.KeySpace().block_key(h, layer)), (h, layer)
    assert not any(store.exists(kvdump.KeySpace().block_key(chain[-1], layer)) for layer in range(NUM_LAYERS))
    assert not store.exists(kvdump.KeySpace().block_key(chain[0], NUM_LAYERS))
    assert kvdump.lookup(store, chain, num_layers=NUM_LAYERS) == full
    assert store.stats()["entries"] == full * NUM_LAYERS + full  # layer records + one commit per block
    assert writer.state == "idle"

    # Storing is a side effect only: the forward computes exactly what it computes without kvdump.
    with torch.no_grad():
        plain = model(ids).logits
    assert torch.equal(result.outputs.logits, plain)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loaded_kv_equals_the_kv_the_model_computed(
    dtype: torch.dtype, store: kvdump.MemoryStore, writer: kvdump.AsyncWriter
) -> None:
    model = make_model(dtype)
    ids = prompt(PROMPT_WITH_TAIL)
    prefill_to_store(model, ids, writer, BLOCK_SIZE)

    decoder = twin(model)
    loaded = load_into_cache(decoder, ids, store, BLOCK_SIZE)
    full = PROMPT_WITH_TAIL // BLOCK_SIZE
    assert (loaded.num_blocks, loaded.num_tokens) == (full, full * BLOCK_SIZE)
    assert loaded.cache.get_seq_length() == loaded.num_tokens

    expected = hf_prompt_cache(model, ids)
    for layer in range(NUM_LAYERS):
        got, want = loaded.cache.layers[layer], expected.layers[layer]
        assert got.keys.dtype == dtype
        assert torch.equal(got.keys, want.keys[:, :, : loaded.num_tokens]), layer
        assert torch.equal(got.values, want.values[:, :, : loaded.num_tokens]), layer

    # Same inputs bit for bit, so continuing from HF's own cache cut to the same length must agree.
    expected.crop(loaded.num_tokens - PROMPT_WITH_TAIL)
    assert greedy(decoder, ids, past_key_values=loaded.cache) == greedy(model, ids, past_key_values=expected)


@pytest.mark.parametrize("length", [PROMPT_WITH_TAIL, 4 * BLOCK_SIZE])
def test_generation_from_loaded_kv_matches_generation_from_scratch(
    length: int, store: kvdump.MemoryStore, writer: kvdump.AsyncWriter
) -> None:
    model = make_model()
    ids = prompt(length)
    prefill_to_store(model, ids, writer, BLOCK_SIZE, request="req-gen")
    decoder = twin(model)
    loaded = load_into_cache(decoder, ids, store, BLOCK_SIZE)
    # A prompt of whole blocks keeps its last token out: the model computes it for the next logits.
    assert loaded.num_tokens == min(length // BLOCK_SIZE * BLOCK_SIZE, length - 1)
    assert loaded.num_blocks == length // BLOCK_SIZE
    assert greedy(decoder, ids, past_key_values=loaded.cache) == greedy(model, ids)


def test_decode_loads_only_the_committed_prefix(store: kvdump.MemoryStore, writer: kvdump.AsyncWriter) -> None:
    model = make_model()
    ids = prompt(PROMPT_WITH_TAIL)
    result = prefill_to_store(model, ids, writer, BLOCK_SIZE)
    assert store.remove(kvdump.KeySpace().commit_key(result.block_hashes[2]))

    loaded = load_into_cache(twin(model), ids, store, BLOCK_SIZE)
    assert (loaded.num_blocks, loaded.num_tokens) == (2, 2 * BLOCK_SIZE)
    assert greedy(model, ids, past_key_values=loaded.cache) == greedy(model, ids)


def test_a_loader_carries_the_writer_namespace(store: kvdump.MemoryStore) -> None:
    model = make_model()
    ids = prompt(PROMPT_WITH_TAIL)
    with kvdump.AsyncWriter(store, num_threads=2, key_space=kvdump.KeySpace("tiny-llama")) as writer:
        prefill_to_store(model, ids, writer, BLOCK_SIZE)

    assert load_into_cache(model, ids, store, BLOCK_SIZE).num_tokens == 0  # default namespace: nothing
    loader = kvdump.KVLoader(store, key_space=kvdump.KeySpace("tiny-llama"), num_threads=2)
    try:
        loaded = load_into_cache(model, ids, loader, BLOCK_SIZE)
        assert loaded.num_blocks == PROMPT_WITH_TAIL // BLOCK_SIZE
        assert loader.state == "idle"  # the session is closed; the loader stays usable
    finally:
        loader.close()


def test_a_decode_model_in_another_dtype_misses_and_a_forced_load_names_the_key(
    store: kvdump.MemoryStore, writer: kvdump.AsyncWriter
) -> None:
    model = make_model(torch.float16)
    ids = prompt(PROMPT_WITH_TAIL)
    stored = prefill_to_store(model, ids, writer, BLOCK_SIZE).block_hashes
    loader = kvdump.KVLoader(store, num_threads=2)
    try:
        # The dtype salts the chain: a bfloat16 model looks up other keys, and finds nothing.
        assert load_into_cache(twin(model).to(torch.bfloat16), ids, loader, BLOCK_SIZE).num_tokens == 0
        # Loading float16 blocks into a bfloat16 cache anyway is refused by the record's header.
        cache = torch.zeros(2, len(stored), BLOCK_SIZE, 2, 16, dtype=torch.bfloat16)
        with pytest.raises(kvdump.KvdumpValueError, match="dtype is float16") as caught:
            loader.load(0, cache, list(range(len(stored))), stored)
        assert caught.value.key.startswith("kvdump/tp0of1/")
    finally:
        loader.close()


def test_a_corrupt_block_fails_the_load_naming_its_key_and_the_session_is_aborted(
    store: kvdump.MemoryStore, writer: kvdump.AsyncWriter
) -> None:
    model = make_model()
    ids = prompt(PROMPT_WITH_TAIL)
    stored = prefill_to_store(model, ids, writer, BLOCK_SIZE).block_hashes
    key = kvdump.KeySpace().block_key(stored[1], 2)
    record = bytearray(store.get(key))
    record[-1] ^= 0xFF  # one payload byte: the header stays valid, the checksum does not
    store.put(key, bytes(record))
    loader = kvdump.KVLoader(store, num_threads=2)
    try:
        with pytest.raises(kvdump.ChecksumError) as caught:
            load_into_cache(twin(model), ids, loader, BLOCK_SIZE)
        assert caught.value.key == key
        assert loader.state == "idle"  # the failed session was aborted, not left open
    finally:
        loader.close()


def test_a_load_from_a_stalled_store_keeps_one_deadline_for_its_waits_and_its_abort(
    store: kvdump.MemoryStore, writer: kvdump.AsyncWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_model()
    ids = prompt(PROMPT_WITH_TAIL)
    prefill_to_store(model, ids, writer, BLOCK_SIZE)
    # Block reads stall; the commit records that lookup reads do not.
    stalled = StallingStore(store, holds_put=no_key, holds_get=lambda key: "/L" in key, limit=30, fails_at_limit=False)
    loader = kvdump.KVLoader(stalled, num_threads=1)
    aborts: list[float | None] = []
    abort = kvdump.KVLoader.abort
    monkeypatch.setattr(kvdump.KVLoader, "abort", lambda self, timeout=None: aborts.append(timeout) or abort(self, 0))
    try:
        with pytest.raises(kvdump.WriteTimeout):
            load_into_cache(twin(model), ids, loader, BLOCK_SIZE, timeout=0.2)
        assert stalled.held == 1  # returned while the read was still inside the store
        # The abort gets what is left of the call's deadline, not the loader's own abort_timeout.
        assert len(aborts) == 1 and aborts[0] is not None and 0 <= aborts[0] <= 0.2
    finally:
        stalled.release.set()
        loader.close()


_PREFILL_PROCESS = textwrap.dedent(
    """
    import json, sys
    import kvdump
    from transformers import LlamaForCausalLM
    from kvdump.integrations.transformers import prefill_to_store

    root, ids, block_size = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    model = LlamaForCausalLM.from_pretrained(root + "/model").eval()
    with kvdump.AsyncWriter(kvdump.FileStore(root + "/store"), num_threads=2) as writer:
        result = prefill_to_store(model, ids, writer, block_size, request="remote")
    print(json.dumps(result.block_hashes))
    """
)


def test_file_store_prefill_in_one_process_decode_in_another(tmp_path: Path) -> None:
    model = make_model()
    model.save_pretrained(tmp_path / "model")
    ids = prompt(PROMPT_WITH_TAIL, seed=11)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _PREFILL_PROCESS, str(tmp_path), json.dumps(ids[0].tolist()), str(BLOCK_SIZE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    stored = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(stored) == PROMPT_WITH_TAIL // BLOCK_SIZE

    # The decode loads the checkpoint the prefill loaded: its name salts the chain.
    decode_model = LlamaForCausalLM.from_pretrained(tmp_path / "model").eval()
    loaded = load_into_cache(decode_model, ids, kvdump.FileStore(str(tmp_path / "store")), BLOCK_SIZE)
    assert loaded.num_blocks == len(stored)
    expected = hf_prompt_cache(model, ids)
    assert torch.equal(loaded.cache.layers[0].keys, expected.layers[0].keys[:, :, : loaded.num_tokens])
    assert greedy(model, ids, past_key_values=loaded.cache) == greedy(model, ids)


def test_a_store_failure_raises_write_error_and_commits_nothing() -> None:
    model = make_model()
    ids = prompt(PROMPT_WITH_TAIL)
    record = 64 + 2 * BLOCK_SIZE * 2 * 16 * 4  # header + K and V of one block: 2 KV heads x 16 dims, fp32
    small = kvdump.MemoryStore(capacity_bytes=3 * record)  # room for 3 of the 12 records
    with kvdump.AsyncWriter(small, num_threads=2) as writer:
        with pytest.raises(kvdump.WriteError) as caught:
            prefill_to_store(model, ids, writer, BLOCK_SIZE, request="req-full")
        assert caught.value.code == kvdump.StatusCode.STORE_FULL
        assert caught.value.request == "req-full"
        assert writer.state == "idle"
    assert small.stats()["rejected_full"] > 0
    chain = block_hashes(ids[0].tolist(), BLOCK_SIZE, model_salt_of(model))
    assert kvdump.lookup(small, chain) == 0
    assert load_into_cache(model, ids, small, BLOCK_SIZE).num_tokens == 0


def test_report_returns_the_outputs_of_a_prefill_whose_save_failed(caplog: pytest.LogCaptureFixture) -> None:
    model = make_model()
    ids = prompt(PROMPT_WITH_TAIL)
    chain = block_hashes(ids[0].tolist(), BLOCK_SIZE, model_salt_of(model))
    refused = block_keys(chain[1:2], [1])  # one record: layer 1 of the second block
    store = FailingStore(kvdump.MemoryStore(capacity_bytes=16 << 20), lambda key: key in refused)
    with kvdump.AsyncWriter(store, num_threads=2) as writer:
        result = prefill_to_store(model, ids, writer, BLOCK_SIZE, request="req-r", on_save_error="report")
        assert writer.state == "idle"
        stats = writer.stats()
        assert (stats["save_failures_reported"], stats["requests_failed_reported"]) == (1, 1)
    assert isinstance(result.save_error, kvdump.WriteError)
    assert result.save_error.failed_requests == ("req-r",)
    assert result.save_error.key in refused
    with torch.no_grad():
        assert torch.equal(result.outputs.logits, model(ids).logits)
    assert result.num_blocks == PROMPT_WITH_TAIL // BLOCK_SIZE
    assert kvdump.lookup(store, chain) == 0
    (record,) = [r for r in caplog.records if r.name == "kvdump"]
    assert "req-r" in record.getMessage() and "STORE_FULL" in record.getMessage()


def test_a_prefill_whose_save_succeeds_reports_no_error(writer: kvdump.AsyncWriter) -> None:
    result = prefill_to_store(make_model(), prompt(PROMPT_WITH_TAIL), writer, BLOCK_SIZE, on_save_error="report")
    assert result.save_error is None
    assert writer.stats()["save_failures_reported"] == 0


def test_a_bad_save_policy_is_refused_before_the_forward(writer: kvdump.AsyncWriter) -> None:
    with pytest.raises(kvdump.KvdumpValueError, match="on_save_error must be one of 'raise', 'report', got 'log'"):
        prefill_to_store(make_model(), prompt(16), writer, BLOCK_SIZE, on_save_error="log")
    assert writer.stats()["cycles"] == 0 and writer.stats()["submitted"] == 0


def test_a_failing_forward_aborts_and_commits_nothing(
    store: kvdump.MemoryStore, writer: kvdump.AsyncWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_model()
    ids = prompt(PROMPT_WITH_TAIL)

    def broken_mlp(hidden: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("layer 1 exploded")

    # Layer 0 has queued its blocks by the time layer 1 fails.
    monkeypatch.setattr(model.model.layers[1].mlp, "forward", broken_mlp)
    with pytest.raises(RuntimeError, match="layer 1 exploded"):
        prefill_to_store(model, ids, writer, BLOCK_SIZE)
    assert writer.state == "idle"
    chain = block_hashes(ids[0].tolist(), BLOCK_SIZE, model_salt_of(model))
    assert kvdump.lookup(store, chain) == 0

    monkeypatch.undo()  # the same writer serves the next prefill
    assert prefill_to_store(model, ids, writer, BLOCK_SIZE).num_blocks == PROMPT_WITH_TAIL // BLOCK_SIZE
    assert kvdump.lookup(store, chain, num_layers=NUM_LAYERS) == PROMPT_WITH_TAIL // BLOCK_SIZE


def test_a_batch_of_several_prompts_is_refused(store: kvdump.MemoryStore, writer: kvdump.AsyncWriter) -> None:
    model = make_model()
    batch = torch.cat([prompt(24, seed=1), prompt(24, seed=2)])
    with pytest.raises(kvdump.KvdumpValueError, match="batch size 1"):
        prefill_to_store(model, batch, writer, BLOCK_SIZE)
    with pytest.raises(kvdump.KvdumpValueError, match="batch size 1"):
        load_into_cache(model, batch, store, BLOCK_SIZE)
    assert writer.state == "idle"
    assert writer.stats()["submitted"] == 0
    assert store.stats()["entries"] == 0


def test_a_prompt_shorter_than_one_block_stores_nothing(store: kvdump.MemoryStore, writer: kvdump.AsyncWriter) -> None:
    model = make_model()
    ids = prompt(BLOCK_SIZE - 1)
    result = prefill_to_store(model, ids, writer, BLOCK_SIZE)
    assert result.num_blocks == 0
    assert store.stats()["entries"] == 0
    loaded = load_into_cache(model, ids, store, BLOCK_SIZE)
    assert (loaded.num_blocks, loaded.num_tokens) == (0, 0)
    assert greedy(model, ids, past_key_values=loaded.cache) == greedy(model, ids)


def test_bad_block_size_and_empty_prompt_are_refused(writer: kvdump.AsyncWriter) -> None:
    model = make_model()
    with pytest.raises(kvdump.KvdumpValueError, match="block_size"):
        prefill_to_store(model, prompt(16), writer, 0)
    with pytest.raises(kvdump.KvdumpValueError, match="empty"):
        prefill_to_store(model, torch.empty(1, 0, dtype=torch.long), writer, BLOCK_SIZE)
    with pytest.raises(kvdump.KvdumpValueError, match="integer"):
        KvdumpCache(writer, torch.ones(1, 16), BLOCK_SIZE)
    assert writer.state == "idle"


def test_sliding_window_layers_are_refused(store: kvdump.MemoryStore, writer: kvdump.AsyncWriter) -> None:
    config = MistralConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=16,
    )
    torch.manual_seed(SEED)
    model = MistralForCausalLM(config).eval()
    ids = prompt(PROMPT_WITH_TAIL)
    with pytest.raises(kvdump.UnsupportedError, match="DynamicSlidingWindowLayer"):
        prefill_to_store(model, ids, writer, BLOCK_SIZE)
    with pytest.raises(kvdump.UnsupportedError, match="DynamicSlidingWindowLayer"):
        load_into_cache(model, ids, store, BLOCK_SIZE)
    assert writer.state == "idle"
    assert store.stats()["entries"] == 0

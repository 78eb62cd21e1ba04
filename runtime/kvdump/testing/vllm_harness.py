"""vLLM's real scheduler driving the KvdumpConnector, with CPU KV caches filled by a stand-in model:
for testing and benchmarking the connector on a machine without a GPU.

vLLM's compiled kernels are CUDA-only, so ``LLM(...)`` cannot run here; its scheduler, KV cache
manager and connector plumbing are pure Python and run as they do in production. The stand-in for
the model writes, for each scheduled token, K/V values that depend on the layer, the TP rank, the
position and every token up to it (as real KV does), so a block loaded from the store can be told
apart from one computed for another prefix. Each step calls the worker-side connector in the model
runner's order: handle_preemptions, bind metadata, start_load_kv (before the forward when the step
loads synchronously), per layer wait_for_layer_load / compute / save_kv_layer, wait_for_save,
get_transfer_results, get_block_ids_with_load_errors, get_kv_connector_stats, clear metadata.

Importing this module sets up vLLM for it, for the whole process: it sets ``VLLM_TARGET_DEVICE=cpu``
unless already set (before vLLM is imported), and seeds vLLM's block hashing
(``init_none_hash(sha256_cbor)``). Import it only where a CPU-only vLLM is what you want.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")  # before vLLM is imported: no GPU here

from vllm.config import CacheConfig, KVTransferConfig, ModelConfig, SchedulerConfig, VllmConfig  # noqa: E402
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole  # noqa: E402
from vllm.sampling_params import SamplingParams  # noqa: E402
from vllm.utils.hashing import sha256_cbor  # noqa: E402
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash  # noqa: E402
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: E402
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec  # noqa: E402
from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput  # noqa: E402
from vllm.v1.request import Request  # noqa: E402
from vllm.v1.structured_output import StructuredOutputManager  # noqa: E402

from kvdump.integrations.vllm import KvdumpConnector  # noqa: E402

VOCAB = 1000
init_none_hash(sha256_cbor)


def write_model_dir(path: Path, layers: int, kv_heads: int, head_size: int) -> Path:
    """A local directory with a tiny Llama ``config.json`` (no weights: nothing loads them)."""
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": kv_heads * head_size * 2,
        "intermediate_size": 128,
        "num_attention_heads": kv_heads * 2,
        "num_key_value_heads": kv_heads,
        "head_dim": head_size,
        "num_hidden_layers": layers,
        "vocab_size": VOCAB,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "torch_dtype": "float32",
    }
    (path / "config.json").write_text(json.dumps(config))
    return path


def new_cache(layout: str, num_blocks: int, block_size: int, kv_heads: int, head_size: int) -> torch.Tensor:
    """One layer's zeroed cache in vLLM's ``layout``."""
    if layout == "flash_attn":
        return torch.zeros(2, num_blocks, block_size, kv_heads, head_size)
    if layout == "flash_infer":
        return torch.zeros(num_blocks, 2, block_size, kv_heads, head_size)
    if layout == "mla":
        return torch.zeros(num_blocks, block_size, head_size)
    raise ValueError(layout)


def block_view(cache: torch.Tensor, layout: str, block_id: int) -> torch.Tensor:
    """One block's content in a layout-neutral shape: [2, block_size, heads, head] (or the latent)."""
    if layout == "flash_attn":
        return cache[:, block_id]
    if layout == "flash_infer":
        return cache[block_id]
    return cache[block_id]


def stand_in_kv(rank: int, layer: int, tokens: list[int], start: int, end: int, shape: tuple[int, ...]) -> torch.Tensor:
    """[end - start, *shape] values for positions [start, end): a function of the rank, the layer,
    the position, the token there and every token before it."""
    prefix = torch.tensor(tokens[:end], dtype=torch.float64)
    weights = torch.arange(1, end + 1, dtype=torch.float64)
    running = torch.cumsum((prefix + 1) * weights, 0)[start:end] % 1_000_003
    pos = torch.arange(start, end, dtype=torch.float64)
    tok = prefix[start:end]
    base = layer * 7.1 + rank * 3.3 + pos * 0.013 + tok * 0.37 + running * 1e-4
    grid = torch.arange(int(torch.tensor(shape).prod()), dtype=torch.float64).reshape(shape) * 0.05
    return torch.sin(base.reshape(-1, *([1] * len(shape))) + grid).to(torch.float32)


class Worker:
    """One TP rank: its connector, its caches, and the block tables the model runner keeps."""

    def __init__(self, engine: VllmEngine, rank: int) -> None:
        self.rank = rank
        self.engine = engine
        extra = dict(engine.extra_config)
        if engine.tp_size > 1:
            extra.update(tp_rank=rank, tp_size=engine.tp_size)
        config = engine.vllm_config_with(extra)
        self.connector = KvdumpConnector(config, KVConnectorRole.WORKER, engine.kv_cache_config)
        self.caches = {
            name: new_cache(engine.layout, engine.num_blocks, engine.block_size, engine.kv_heads, engine.head_size)
            for name in engine.layer_names
        }
        self.connector.register_kv_caches(self.caches)
        self.tables: dict[str, list[int]] = {}

    def block(self, layer: int, block_id: int) -> torch.Tensor:
        return block_view(self.caches[self.engine.layer_names[layer]], self.engine.layout, block_id)

    def _write(self, layer_name: str, layer: int, request_id: str, tokens: list[int], start: int, end: int) -> None:
        cache = self.caches[layer_name]
        engine = self.engine
        shape = {
            "flash_attn": (2, engine.kv_heads, engine.head_size),
            "flash_infer": (2, engine.kv_heads, engine.head_size),
            "mla": (engine.head_size,),
        }[engine.layout]
        values = stand_in_kv(self.rank, layer, tokens, start, end, shape)
        table = self.tables[request_id]
        for offset, position in enumerate(range(start, end)):
            block_id, slot = table[position // engine.block_size], position % engine.block_size
            if engine.layout == "flash_attn":
                cache[:, block_id, slot] = values[offset]
            elif engine.layout == "flash_infer":
                cache[block_id, :, slot] = values[offset]
            else:
                cache[block_id, slot] = values[offset]

    def execute(self, so: Any) -> KVConnectorOutput:
        """The model runner's step: the connector hooks around a stand-in forward."""
        connector = self.connector
        meta = so.kv_connector_metadata
        connector.handle_preemptions(meta)
        for request_id in so.preempted_req_ids or ():
            self.tables.pop(request_id, None)
        for new in so.scheduled_new_reqs:
            self.tables[new.req_id] = list(new.block_ids[0])
        cached = so.scheduled_cached_reqs
        for i, request_id in enumerate(cached.req_ids):
            ids = cached.new_block_ids[i]
            if request_id in cached.resumed_req_ids:
                self.tables[request_id] = list(ids[0]) if ids is not None else []
            elif ids is not None:
                self.tables[request_id].extend(ids[0])
        connector.bind_connector_metadata(meta)
        if so.has_sync_kv_loads:
            connector.start_load_kv(None)
        work = []
        for new in so.scheduled_new_reqs:
            work.append((new.req_id, new.num_computed_tokens))
        for i, request_id in enumerate(cached.req_ids):
            work.append((request_id, cached.num_computed_tokens[i]))
        for layer, name in enumerate(self.engine.layer_names):
            connector.wait_for_layer_load(name)
            for request_id, computed in work:
                tokens = self.engine.requests[request_id].all_token_ids
                count = so.num_scheduled_tokens[request_id]
                self._write(name, layer, request_id, list(tokens), computed, computed + count)
            connector.save_kv_layer(name, self.caches[name], None)
        if not so.has_sync_kv_loads:
            connector.start_load_kv(None)
        connector.wait_for_save()
        results = connector.get_transfer_results(so.finished_req_ids)
        output = KVConnectorOutput(
            finished_sending=results.finished_sending or None,
            finished_recving=results.finished_recving or None,
            invalid_block_ids=connector.get_block_ids_with_load_errors(),
            kv_connector_stats=connector.get_kv_connector_stats(),
        )
        connector.clear_connector_metadata()
        return output


class VllmEngine:
    """The real ``Scheduler`` (which builds its own scheduler-side KvdumpConnector from the config)
    and ``tp_size`` worker ranks. ``enable_prefix_caching`` is off by default so that a shared
    prefix comes from the store, not from vLLM's own block reuse."""

    def __init__(
        self,
        tmp_path: Path,
        extra_config: dict[str, Any],
        *,
        role: str = "kv_both",
        layout: str = "flash_attn",
        num_blocks: int = 64,
        block_size: int = 16,
        layers: int = 2,
        kv_heads: int = 2,
        head_size: int = 16,
        tp_size: int = 1,
        max_num_batched_tokens: int = 1024,
        enable_prefix_caching: bool = False,
        load_failure_policy: str = "recompute",
        model_dir: Path | None = None,
    ) -> None:
        self.layout = layout
        self.num_blocks, self.block_size = num_blocks, block_size
        self.kv_heads, self.head_size = (1, head_size) if layout == "mla" else (kv_heads, head_size)
        self.tp_size = tp_size
        self.extra_config = dict(extra_config)
        if tp_size > 1:
            self.extra_config["tp_size"] = tp_size
        self.role = role
        self.load_failure_policy = load_failure_policy
        self.layer_names = [f"model.layers.{i}.self_attn.attn" for i in range(layers)]
        model_dir = model_dir or write_model_dir(tmp_path / "model", layers, kv_heads, head_size)
        self.model_config = ModelConfig(
            model=str(model_dir), skip_tokenizer_init=True, dtype="float32", max_model_len=2048
        )
        self.cache_config = CacheConfig(
            block_size=block_size, num_gpu_blocks_override=num_blocks, enable_prefix_caching=enable_prefix_caching
        )
        self.max_num_batched_tokens = max_num_batched_tokens
        self.vllm_config = self.vllm_config_with(self.extra_config)
        self.vllm_config.cache_config.num_gpu_blocks = num_blocks
        spec = FullAttentionSpec(
            block_size=block_size, num_kv_heads=self.kv_heads, head_size=self.head_size, dtype=torch.float32
        )
        self.kv_cache_config = KVCacheConfig(
            num_blocks=num_blocks, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(self.layer_names, spec)]
        )
        self.scheduler = Scheduler(
            vllm_config=self.vllm_config,
            kv_cache_config=self.kv_cache_config,
            log_stats=True,
            structured_output_manager=StructuredOutputManager(self.vllm_config),
            block_size=block_size,
        )
        assert isinstance(self.scheduler.connector, KvdumpConnector)
        self.workers = [Worker(self, rank) for rank in range(tp_size)]
        self.requests: dict[str, Request] = {}
        self.outputs: list[Any] = []
        self.invalid_block_ids: set[int] = set()

    def vllm_config_with(self, extra: dict[str, Any]) -> VllmConfig:
        config = VllmConfig(
            model_config=self.model_config,
            cache_config=self.cache_config,
            scheduler_config=SchedulerConfig(
                max_num_batched_tokens=self.max_num_batched_tokens,
                max_num_seqs=8,
                max_model_len=2048,
                is_encoder_decoder=False,
            ),
            kv_transfer_config=KVTransferConfig(
                kv_connector="KvdumpConnector",
                kv_connector_module_path="kvdump.integrations.vllm",
                kv_role=self.role,
                kv_connector_extra_config=extra,
                kv_load_failure_policy=self.load_failure_policy,
            ),
        )
        config.cache_config.num_gpu_blocks = self.num_blocks
        return config

    @property
    def connector(self) -> KvdumpConnector:
        """The scheduler-side connector vLLM built."""
        return self.scheduler.connector  # type: ignore[return-value]

    def add(self, request_id: str, prompt: list[int], max_tokens: int = 1) -> Request:
        request = Request(
            request_id,
            list(prompt),
            SamplingParams(max_tokens=max_tokens, ignore_eos=True),
            None,
            block_hasher=get_request_block_hasher(self.block_size, sha256_cbor),
        )
        self.requests[request_id] = request
        self.scheduler.add_request(request)
        return request

    def step(self) -> Any:
        """One engine step; returns the scheduler output."""
        so = self.scheduler.schedule()
        outputs = [worker.execute(so) for worker in self.workers]
        kv_output = outputs[0]
        for other in outputs[1:]:
            kv_output.invalid_block_ids |= other.invalid_block_ids
            if other.kv_connector_stats is not None:
                if kv_output.kv_connector_stats is None:
                    kv_output.kv_connector_stats = other.kv_connector_stats
                else:
                    kv_output.kv_connector_stats.aggregate(other.kv_connector_stats)
        self.invalid_block_ids |= kv_output.invalid_block_ids
        # The scheduler advanced num_computed_tokens when it scheduled; the output keeps the count
        # each request had before this step.
        before = {new.req_id: new.num_computed_tokens for new in so.scheduled_new_reqs}
        before.update(zip(so.scheduled_cached_reqs.req_ids, so.scheduled_cached_reqs.num_computed_tokens))
        req_ids = list(before)
        sampled = []
        for request_id in req_ids:
            request = self.requests[request_id]
            done = before[request_id] + so.num_scheduled_tokens[request_id]
            # A token is sampled once the step reaches the end of what is known (the prompt, then
            # each generated token); a step that computes part of the prompt samples nothing.
            sampled.append([sum(request.all_token_ids) % VOCAB] if done >= request.num_tokens else [])
        runner_output = ModelRunnerOutput(
            req_ids=req_ids,
            req_id_to_index={r: i for i, r in enumerate(req_ids)},
            sampled_token_ids=sampled,
            kv_connector_output=kv_output,
        )
        self.outputs.append(self.scheduler.update_from_output(so, runner_output))
        return so

    def run(self, max_steps: int = 64) -> list[Any]:
        """Steps until no request is left; returns the scheduler outputs."""
        outputs = []
        for _ in range(max_steps):
            if not self.scheduler.has_requests():
                return outputs
            outputs.append(self.step())
        raise AssertionError(f"requests still unfinished after {max_steps} steps")

    def shutdown(self) -> None:
        for worker in self.workers:
            worker.connector.shutdown()
        self.scheduler.shutdown()

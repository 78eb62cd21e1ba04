"""``KvdumpConnector``: vLLM's KV connector v1 on kvdump's writer, loader and commit records.

| vLLM hook | kvdump |
|---|---|
| ``get_num_new_matched_tokens`` | one batched ``lookup`` of the committed prefix |
| ``save_kv_layer`` | ``write_cache_store`` per request, captured by reference |
| ``wait_for_save`` | the writer's barrier, which publishes the commit records |
| ``start_load_kv`` / ``wait_for_layer_load`` | the per-layer asynchronous loader |
| ``get_block_ids_with_load_errors`` | blocks missing, corrupt or late, for vLLM to recompute |
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorStats
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from kvdump.errors import UnsupportedError
from kvdump.integrations.vllm.metadata import KvdumpConnectorMetadata
from kvdump.integrations.vllm.request_keys import cache_element_type
from kvdump.integrations.vllm.scheduler_side import SchedulerSide
from kvdump.integrations.vllm.settings import ConnectorSettings, parse_settings
from kvdump.integrations.vllm.shared_stores import shared_store
from kvdump.integrations.vllm.stats import KvdumpConnectorStats, StatsCounter
from kvdump.integrations.vllm.worker_side import WorkerSide
from kvdump.key_space import KeySpace

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

_NOT_IN_NAMESPACE = re.compile(r"[^!-~]|/")


def default_namespace(model: str) -> str:
    """A key namespace from the model's name or path: printable ASCII, no ``/``."""
    return "vllm-" + _NOT_IN_NAMESPACE.sub("_", model.rstrip("/"))


def _tensor_parallel_rank(settings: ConnectorSettings) -> int:
    if settings.tp_rank is not None:
        return settings.tp_rank
    from vllm.distributed import parallel_state

    return parallel_state.get_tensor_model_parallel_rank() if parallel_state.model_parallel_is_initialized() else 0


class KvdumpConnector(KVConnectorBase_V1):
    """vLLM KV connector v1 storing and loading KV through kvdump (see the module docstring).

    Load it with ``--kv-transfer-config '{"kv_connector": "KvdumpConnector",
    "kv_connector_module_path": "kvdump.integrations.vllm", "kv_role": "kv_both",
    "kv_connector_extra_config": {"store_url": "file:///srv/kv"}}'``. ``kv_producer`` only saves,
    ``kv_consumer`` only loads, ``kv_both`` does both (prefix reuse)."""

    _cache_hit_source = CacheHitSource.HOST

    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        settings = parse_settings(self._kv_transfer_config.kv_connector_extra_config)
        parallel = vllm_config.parallel_config
        if parallel.pipeline_parallel_size > 1:
            raise UnsupportedError("KvdumpConnector does not support pipeline parallelism (pipeline_parallel_size > 1)")
        groups = kv_cache_config.kv_cache_groups
        if len(groups) != 1:
            raise UnsupportedError(
                f"KvdumpConnector needs one KV cache group, got {len(groups)}; start vLLM with "
                "--disable-hybrid-kv-cache-manager"
            )
        model = vllm_config.model_config
        self.settings = settings
        self.namespace = settings.namespace or default_namespace(str(model.model))
        self.block_size = vllm_config.cache_config.block_size
        self.tp_size = settings.tp_size or parallel.tensor_parallel_size
        layer_names = list(groups[0].layer_names)
        store = shared_store(settings.resolved_store_url)
        loads = bool(self._kv_transfer_config.is_kv_consumer)
        saves = bool(self._kv_transfer_config.is_kv_producer)
        self._stats = StatsCounter()
        self._scheduler: SchedulerSide | None = None
        self._worker: WorkerSide | None = None
        if role == KVConnectorRole.SCHEDULER:
            self._scheduler = SchedulerSide(
                store=store,
                namespace=self.namespace,
                model=settings.model_name or str(model.model),
                kv_dtype=cache_element_type(model.dtype, str(vllm_config.cache_config.cache_dtype)),
                block_size=self.block_size,
                num_layers=len(layer_names),
                tp_size=self.tp_size,
                lookup_timeout=settings.lookup_timeout,
                loads=loads,
                saves=saves,
                stats=self._stats,
            )
        else:
            self.tp_rank = _tensor_parallel_rank(settings)
            self._worker = WorkerSide(
                store=store,
                layer_names=layer_names,
                key_space=KeySpace(self.namespace, self.tp_rank, self.tp_size),
                kv_layout=settings.kv_layout,
                cache_dtype=str(vllm_config.cache_config.cache_dtype),
                save_timeout=settings.save_timeout,
                load_timeout=settings.load_timeout,
                writer_kwargs=settings.writer_kwargs(),
                loads=loads,
                saves=saves,
                stats=self._stats,
            )

    @property
    def requires_kv_delivery(self) -> bool:
        # Every save ends at its step's barrier, so a preempted request never has one pending.
        return False

    @classmethod
    def get_required_kvcache_layout(cls, vllm_config: VllmConfig) -> str | None:
        # Shapes are read as [.., block_size, heads, head_size]; HND would swap the two.
        return "NHD"

    @classmethod
    def build_kv_connector_stats(cls, data: dict[str, Any] | None = None) -> KVConnectorStats | None:
        return KvdumpConnectorStats(data=dict(data)) if data is not None else KvdumpConnectorStats()

    def get_kv_connector_stats(self) -> KVConnectorStats | None:
        return self._stats.take()

    def stats_totals(self) -> dict[str, int | float]:
        """Everything this side counted since it started."""
        return self._stats.totals()

    # -- worker side -------------------------------------------------------------------------------

    def _worker_side(self) -> WorkerSide:
        if self._worker is None:
            raise RuntimeError("a worker-side method was called on the scheduler-side KvdumpConnector")
        return self._worker

    def bind_connector_metadata(self, connector_metadata: KVConnectorMetadata) -> None:
        super().bind_connector_metadata(connector_metadata)
        if not isinstance(connector_metadata, KvdumpConnectorMetadata):
            raise TypeError(f"expected KvdumpConnectorMetadata, got {type(connector_metadata).__name__}")
        self._worker_side().bind(connector_metadata)

    def clear_connector_metadata(self) -> None:
        super().clear_connector_metadata()
        self._worker_side().clear()

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self._worker_side().register(kv_caches)

    def handle_preemptions(self, kv_connector_metadata: KVConnectorMetadata) -> None:
        if isinstance(kv_connector_metadata, KvdumpConnectorMetadata):
            self._worker_side().handle_preemptions(kv_connector_metadata)

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        self._worker_side().start_load()

    def wait_for_layer_load(self, layer_name: str) -> None:
        self._worker_side().wait_layer_load(layer_name)

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any) -> None:
        self._worker_side().save_layer(layer_name, kv_layer)

    def wait_for_save(self) -> None:
        self._worker_side().wait_for_save()

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        # Saves end at each step's barrier and loads within the step: nothing is ever pending here.
        return None, None

    def get_block_ids_with_load_errors(self) -> set[int]:
        return self._worker_side().take_load_errors()

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(self.settings.save_timeout)

    # -- scheduler side ----------------------------------------------------------------------------

    def _scheduler_side(self) -> SchedulerSide:
        if self._scheduler is None:
            raise RuntimeError("a scheduler-side method was called on the worker-side KvdumpConnector")
        return self._scheduler

    def on_new_request(self, request: Request) -> None:
        self._scheduler_side().track(request)

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> tuple[int | None, bool]:
        return self._scheduler_side().matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int) -> None:
        self._scheduler_side().after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        return self._scheduler_side().build_meta(scheduler_output)

    def request_finished(self, request: Request, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        return self._scheduler_side().finished(request)

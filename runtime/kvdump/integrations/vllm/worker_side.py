"""The connector in a vLLM worker: loads before each layer's attention, saves after it, and one
barrier per step.

Saves: ``save_kv_layer`` queues one ``write_cache_store`` per request and layer, which captures the
layer's cache by reference and returns; ``wait_for_save`` is the writer's barrier, which also
publishes the commit records of every request whose blocks all stored. A failed or timed-out save
is logged and counted, nothing of the failed requests is committed, and the step goes on.

Loads: ``start_load_kv`` queues every layer's reads on a loader pool; ``wait_for_layer_load`` waits
for that layer only. A block that is missing, corrupt or late is reported to vLLM through
``get_block_ids_with_load_errors``, so vLLM recomputes it; an abandoned load never writes into the
cache afterwards."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from kvdump.cache_ops import write_cache_store
from kvdump.errors import KvdumpError, LifecycleError, WriteError, WriteTimeout
from kvdump.integrations.vllm.layouts import LayerCache, element_view, layer_cache
from kvdump.integrations.vllm.metadata import BlockRun, KvdumpConnectorMetadata
from kvdump.integrations.vllm.stats import StatsCounter
from kvdump.key_space import KeySpace
from kvdump.loader import KVLoader
from kvdump.writer import AsyncWriter

logger = logging.getLogger("kvdump.vllm")


class WorkerSide:
    """Worker-side state; vLLM calls it from the model runner's thread."""

    def __init__(
        self,
        *,
        store: Any,
        layer_names: Iterable[str],
        key_space: KeySpace,
        kv_layout: str,
        cache_dtype: str,
        save_timeout: float,
        load_timeout: float,
        writer_kwargs: Mapping[str, Any],
        loads: bool,
        saves: bool,
        stats: StatsCounter,
    ) -> None:
        self._layer_index = {name: i for i, name in enumerate(layer_names)}
        self._kv_layout = kv_layout
        self._view_as = element_view(cache_dtype)
        self._save_timeout = save_timeout
        self._load_timeout = load_timeout
        self._stats = stats
        self._layers: dict[str, LayerCache] = {}
        self.writer = AsyncWriter(store, key_space=key_space, **writer_kwargs) if saves else None
        self.loader = KVLoader(store, key_space=key_space, **writer_kwargs) if loads else None
        self._meta: KvdumpConnectorMetadata | None = None
        self._unknown_layers: set[str] = set()
        self._loading = False
        self._load_deadline = 0.0
        self._load_errors: set[int] = set()

    # -- set-up ------------------------------------------------------------------------------------

    def register(self, kv_caches: Mapping[str, torch.Tensor]) -> None:
        """Describe every layer's cache once; names outside the connector's layer list are refused."""
        for name, kv in kv_caches.items():
            if name not in self._layer_index:
                raise KvdumpError(
                    f"vLLM registered a KV cache for layer {name!r}, which is not in the KV cache "
                    f"config's layer list ({len(self._layer_index)} layers)"
                )
            self._layers[name] = layer_cache(kv, self._kv_layout, self._view_as)

    def _layer(self, name: str, kv: torch.Tensor | None = None) -> tuple[int, LayerCache]:
        cache = self._layers.get(name)
        # A tensor other than the registered one is described anew (a FlashInfer K view starts where
        # the whole tensor does, so comparing first bytes is enough).
        if cache is None or (kv is not None and kv.data_ptr() != cache.kv.data_ptr()):
            if kv is None:
                raise KvdumpError(f"no KV cache registered for layer {name!r}")
            cache = self._layers[name] = layer_cache(kv, self._kv_layout, self._view_as)
        return self._layer_index[name], cache

    def _warn_unknown_layer(self, name: str) -> None:
        if name not in self._unknown_layers:
            self._unknown_layers.add(name)
            logger.warning("kvdump ignores layer %r: it is not in the KV cache group the connector serves", name)

    # -- per step ----------------------------------------------------------------------------------

    def bind(self, meta: KvdumpConnectorMetadata) -> None:
        self._meta = meta

    def clear(self) -> None:
        self._meta = None

    def handle_preemptions(self, meta: KvdumpConnectorMetadata) -> None:
        """Blocks of preempted requests may be reused from now on: drop any of their writes still
        queued (none are, after the previous step's barrier, unless it was abandoned)."""
        if self.writer is None or self.writer.state != "accepting":
            return
        for request_id in meta.preempted:
            self.writer.cancel_request(request_id)

    def start_load(self) -> None:
        """Queue every layer's reads for this step's loads."""
        meta = self._meta
        if self.loader is None or meta is None or not meta.loads:
            return
        self.loader.start()
        self._loading = True
        self._load_deadline = time.monotonic() + self._load_timeout
        for name in sorted(self._layers, key=self._layer_index.__getitem__):
            layer, cache = self._layer(name)
            for run in meta.loads:
                ids, hashes = run.tensors()
                try:
                    self.loader.load_async(layer, cache.kv, ids, hashes, v_cache=cache.v)
                except KvdumpError:  # refused before anything was queued (e.g. a bad id)
                    self._fail_load(run)

    def wait_layer_load(self, name: str) -> None:
        """Return once layer ``name`` is loaded; a failure marks the blocks at fault."""
        if not self._loading or self.loader is None or self._meta is None or name not in self._layers:
            return
        layer, cache = self._layer(name)
        remaining = max(0.0, self._load_deadline - time.monotonic())
        try:
            self.loader.wait_layer(layer, timeout=remaining)
        except WriteTimeout as error:
            # Late: every block of the step counts as failed, and the loads are abandoned so that
            # none writes into the cache after vLLM starts recomputing into it.
            logger.error(
                "kvdump loads missed their deadline (%.3fs); vLLM recomputes them: %s", self._load_timeout, error
            )
            for run in self._meta.loads:
                self._fail_load(run)
            self._end_loads(abort=True)
        except KvdumpError as error:
            self._locate_load_failures(layer, cache, error)
        else:
            blocks = sum(len(run.block_ids) for run in self._meta.loads)
            self._stats.add(loads=blocks, load_bytes=blocks * cache.payload_bytes_per_block)

    def _locate_load_failures(self, layer: int, cache: LayerCache, error: KvdumpError) -> None:
        # The layer's batched read names only its first bad key. Reading again block by block, on
        # this rare path, finds each bad block and loads every good one, so vLLM recomputes only
        # from the first bad block of each request.
        assert self._meta is not None and self.loader is not None
        logger.warning("kvdump load of layer %d failed, locating the bad blocks: %s", layer, error)
        for run in self._meta.loads:
            ids, hashes = run.tensors()
            for i in range(len(run.block_ids)):
                try:
                    self.loader.load(layer, cache.kv, ids[i : i + 1], hashes[i : i + 1], v_cache=cache.v)
                except KvdumpError:
                    self._load_errors.add(run.block_ids[i])
                    self._stats.add(load_failures=1)
                else:
                    self._stats.add(loads=1, load_bytes=cache.payload_bytes_per_block)

    def _fail_load(self, run: BlockRun) -> None:
        fresh = set(run.block_ids) - self._load_errors
        self._load_errors.update(fresh)
        self._stats.add(load_failures=len(fresh))

    def _end_loads(self, abort: bool) -> None:
        if not self._loading or self.loader is None:
            return
        self._loading = False
        try:
            if abort:
                self.loader.abort(0)
            else:
                # Every layer was waited for; this closes the session (its errors were handled).
                self.loader.finish(timeout=max(0.0, self._load_deadline - time.monotonic()))
        except KvdumpError:
            if self.loader.state != "idle":
                self.loader.abort(0)

    def save_layer(self, name: str, kv: torch.Tensor) -> None:
        """Queue this layer's blocks of every request saving in this step (captured by reference)."""
        meta = self._meta
        if self.writer is None or meta is None or not meta.saves:
            return
        if name not in self._layer_index:
            # A layer outside the connector's KV cache group (a draft model's, say): its blocks are
            # not part of what the scheduler plans or commits.
            self._warn_unknown_layer(name)
            return
        if self.writer.state == "idle":
            self.writer.init()
        try:
            layer, cache = self._layer(name, kv)
        except KvdumpError as error:  # a cache tensor the ops cannot take: nothing of this step commits
            logger.error("kvdump cannot save layer %r: %s", name, error)
            for run in meta.saves:
                self.writer.cancel_request(run.request_id)
            self._stats.add(save_failures=1)
            return
        for run in meta.saves:
            ids, hashes = run.tensors()
            try:
                write_cache_store(self.writer, layer, cache.kv, ids, hashes, v_cache=cache.v, request=run.request_id)
            except KvdumpError as error:
                # Refused before anything was queued: this request stores nothing this step.
                logger.error("kvdump could not queue layer %d of request %s: %s", layer, run.request_id, error)
                self.writer.cancel_request(run.request_id)
                self._stats.add(save_failures=1)
                continue
            self._stats.add(saves=len(run.block_ids), save_bytes=len(run.block_ids) * cache.payload_bytes_per_block)

    def wait_for_save(self) -> None:
        """The step's barrier: every queued save stored and the complete requests committed, or the
        failure logged and counted. Never raises for a save error: the step's output stands."""
        self._end_loads(abort=False)
        writer = self.writer
        if writer is None or writer.state == "idle":
            return
        started = time.monotonic()
        try:
            writer.wait_all_done(self._save_timeout)
        except WriteTimeout as error:
            logger.error(
                "kvdump saves missed their deadline (%.3fs); nothing of this step is committed: %s",
                self._save_timeout,
                error,
            )
            writer.abort(max(0.0, self._save_timeout - (time.monotonic() - started)))
            self._stats.add(save_failures=1)
        except WriteError as error:
            failed = ", ".join(error.failed_requests) or "none named"
            logger.error("kvdump save failed; requests not committed: %s; %s", failed, error)
            self._stats.add(save_failures=1)
        except LifecycleError:
            raise
        except KvdumpError as error:
            logger.error("kvdump barrier failed: %s", error)
            self._stats.add(save_failures=1)
        finally:
            if writer.state != "idle" and not writer.closed:
                writer.abort(0)
            self._stats.add(barrier_waits=1, barrier_wait_s=time.monotonic() - started)

    def take_load_errors(self) -> set[int]:
        """Block ids whose load failed since the last call."""
        errors, self._load_errors = self._load_errors, set()
        return errors

    def shutdown(self, timeout: float) -> None:
        """Abort whatever is in flight within ``timeout`` and stop the pools."""
        for pool in (self.writer, self.loader):
            if pool is not None:
                pool.close(timeout)

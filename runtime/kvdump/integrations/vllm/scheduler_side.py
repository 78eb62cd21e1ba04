"""The connector in vLLM's scheduler: how much of a prompt the store holds, and which blocks each
step loads and saves.

A request's saves all finish (or are abandoned before they read a block) at the barrier that ends
the step that scheduled them, before vLLM can free or reuse the request's blocks, so the connector
never holds blocks past ``request_finished``."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import torch

from kvdump._C import MemoryStore
from kvdump.commit import lookup
from kvdump.hashing import full_block_hashes
from kvdump.integrations.vllm.deadline_call import DeadlineCaller, InlineCaller
from kvdump.integrations.vllm.metadata import BlockRun, KvdumpConnectorMetadata
from kvdump.integrations.vllm.request_keys import request_salt, unsupported_reason
from kvdump.integrations.vllm.stats import StatsCounter
from kvdump.key_space import KeySpace

logger = logging.getLogger("kvdump.vllm")


@dataclasses.dataclass
class _Tracked:
    """What the scheduler side remembers of a live request."""

    prompt_len: int
    chain: list[int]  # hashes of the prompt's full blocks
    block_table: list[int] = dataclasses.field(default_factory=list)
    planned_load: tuple[int, int] | None = None  # (first block, count) found by the last lookup


class SchedulerSide:
    """Scheduler-side state; vLLM calls it from the scheduler's one thread."""

    def __init__(
        self,
        *,
        store: Any,
        namespace: str,
        model: str,
        kv_dtype: torch.dtype | str,
        block_size: int,
        num_layers: int,
        tp_size: int,
        lookup_timeout: float,
        loads: bool,
        saves: bool,
        stats: StatsCounter,
    ) -> None:
        self._store = store
        self._namespace = namespace
        self._model = model
        self._kv_dtype = kv_dtype
        self._block_size = block_size
        self._num_layers = num_layers
        self._tp_size = tp_size
        self._lookup_timeout = lookup_timeout
        # An in-process MemoryStore answers from memory and cannot stall, so its lookups run inline;
        # any other store's run on a thread the scheduler waits on for at most lookup_timeout.
        inline = type(store) is MemoryStore
        self._lookups = None if not loads else InlineCaller() if inline else DeadlineCaller("kvdump-lookup")
        self._saves = saves
        self._stats = stats
        self._requests: dict[str, _Tracked] = {}
        self._pending_loads: list[BlockRun] = []

    def track(self, request: Any) -> _Tracked | None:
        """Start following a request vLLM added: its prompt's hash chain, computed once."""
        tracked = self._requests.get(request.request_id)
        if tracked is None:
            reason = unsupported_reason(request)
            if reason is not None:
                logger.debug("request %s is not stored or looked up: %s", request.request_id, reason)
                return None
            prompt = request.prompt_token_ids
            salt = request_salt(request, self._model, self._kv_dtype)
            # Only full blocks are stored; a partly filled last block never is.
            tracked = _Tracked(len(prompt), full_block_hashes(list(prompt), self._block_size, salt))
            self._requests[request.request_id] = tracked
        return tracked

    def matched_tokens(self, request: Any, num_computed_tokens: int) -> tuple[int, bool]:
        """Tokens past ``num_computed_tokens`` that the store holds committed, in whole blocks; never
        the prompt's last token, which vLLM must compute to sample from."""
        if self._lookups is None:
            return 0, False
        tracked = self.track(request)
        if tracked is None:
            return 0, False
        tracked.planned_load = None
        first = num_computed_tokens // self._block_size
        usable = (tracked.prompt_len - 1) // self._block_size
        if usable <= first:
            return 0, False
        wanted = tracked.chain[first:usable]
        started = time.perf_counter()
        try:
            found = self._lookups.call(lambda: self._committed_blocks(wanted), self._lookup_timeout)
        except Exception as error:  # noqa: BLE001 - whatever a store raises
            # A broken record, or a store that fails or stalls, costs a cache miss, never the request.
            self._stats.add(lookups=1, lookup_failures=1, lookup_s=time.perf_counter() - started)
            logger.warning("kvdump lookup for request %s failed, computing it instead: %s", request.request_id, error)
            return 0, False
        self._stats.add(
            lookups=1,
            lookup_s=time.perf_counter() - started,
            query_tokens=len(wanted) * self._block_size,
            hit_tokens=found * self._block_size,
        )
        if found == 0:
            return 0, False
        tracked.planned_load = (first, found)
        return found * self._block_size, False

    def _committed_blocks(self, wanted: list[int]) -> int:
        # A block is usable only when every TP rank committed it.
        return min(
            lookup(
                self._store,
                wanted,
                key_space=KeySpace(self._namespace, rank, self._tp_size),
                num_layers=self._num_layers,
            )
            for rank in range(self._tp_size)
        )

    def after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        """Plan the load vLLM accepted: ``num_external_tokens`` from the last lookup's first block."""
        tracked = self._requests.get(request.request_id)
        if tracked is None:
            return
        planned, tracked.planned_load = tracked.planned_load, None
        if num_external_tokens <= 0 or planned is None:
            return
        first, found = planned
        count = min(found, num_external_tokens // self._block_size)
        block_ids = blocks.get_block_ids()[0]
        if count <= 0 or len(block_ids) < first + count:
            return
        self._pending_loads.append(
            BlockRun(request.request_id, list(block_ids[first : first + count]), tracked.chain[first : first + count])
        )

    def build_meta(self, scheduler_output: Any) -> KvdumpConnectorMetadata:
        """This step's loads (planned since the last step) and the prompt blocks it completes."""
        meta = KvdumpConnectorMetadata(
            loads=self._pending_loads, preempted=set(scheduler_output.preempted_req_ids or ())
        )
        self._pending_loads = []
        for request_id in meta.preempted:
            tracked = self._requests.get(request_id)
            if tracked is not None:
                tracked.block_table = []  # freed; a resumed request arrives with a new table
        scheduled = scheduler_output.num_scheduled_tokens
        saving: set[int] = set()  # a block computed twice in one step (same prompt twice) is saved once
        for new in scheduler_output.scheduled_new_reqs:
            tracked = self._requests.get(new.req_id)
            if tracked is None:
                continue
            tracked.block_table = list(new.block_ids[0])
            self._plan_save(meta, new.req_id, tracked, new.num_computed_tokens, scheduled.get(new.req_id, 0), saving)
        cached = scheduler_output.scheduled_cached_reqs
        for i, request_id in enumerate(cached.req_ids):
            tracked = self._requests.get(request_id)
            if tracked is None:
                continue
            new_ids = cached.new_block_ids[i]
            if request_id in cached.resumed_req_ids:
                tracked.block_table = list(new_ids[0]) if new_ids is not None else []
            elif new_ids is not None:
                tracked.block_table.extend(new_ids[0])
            computed = cached.num_computed_tokens[i]
            self._plan_save(meta, request_id, tracked, computed, scheduled.get(request_id, 0), saving)
        return meta

    def _plan_save(
        self,
        meta: KvdumpConnectorMetadata,
        request_id: str,
        tracked: _Tracked,
        computed: int,
        scheduled: int,
        saving: set[int],
    ) -> None:
        if not self._saves or scheduled <= 0:
            return
        first = computed // self._block_size
        end = min(computed + scheduled, tracked.prompt_len) // self._block_size
        end = min(end, len(tracked.block_table), len(tracked.chain))
        ids, hashes = [], []
        for index in range(first, end):
            block_hash = tracked.chain[index]
            if block_hash in saving:
                continue
            saving.add(block_hash)
            ids.append(tracked.block_table[index])
            hashes.append(block_hash)
        if ids:
            meta.saves.append(BlockRun(request_id, ids, hashes))

    def finished(self, request: Any) -> tuple[bool, dict[str, Any] | None]:
        """Forget the request. Its saves ended at its last step's barrier, so vLLM may free its
        blocks now."""
        self._requests.pop(request.request_id, None)
        return False, None

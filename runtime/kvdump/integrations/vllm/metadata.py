"""What the scheduler-side connector tells the workers each step: which blocks to load before the
forward and which to save during it. Plain lists of ints, so vLLM can pickle it to every worker."""

from __future__ import annotations

import dataclasses

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorMetadata


@dataclasses.dataclass
class BlockRun:
    """Blocks of one request: ``block_ids[i]`` of the paged cache holds the block keyed by
    ``block_hashes[i]``."""

    request_id: str
    block_ids: list[int]
    block_hashes: list[int]
    _tensors: tuple[torch.Tensor, torch.Tensor] | None = dataclasses.field(default=None, repr=False, compare=False)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ids and hashes as the int64 CPU tensors the kvdump ops take, built once per step."""
        if self._tensors is None:
            self._tensors = (
                torch.tensor(self.block_ids, dtype=torch.int64),
                torch.tensor(self.block_hashes, dtype=torch.int64),
            )
        return self._tensors

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_tensors"] = None  # rebuilt on the worker; tensors would only bloat the message
        return state


@dataclasses.dataclass
class KvdumpConnectorMetadata(KVConnectorMetadata):
    """One step's plan: ``loads`` before the forward, ``saves`` during it, and the requests the
    scheduler preempted (whose blocks may be handed to other requests from this step on)."""

    loads: list[BlockRun] = dataclasses.field(default_factory=list)
    saves: list[BlockRun] = dataclasses.field(default_factory=list)
    preempted: set[str] = dataclasses.field(default_factory=set)

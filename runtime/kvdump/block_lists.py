"""Block ids, block hashes and layer indexes as the ops take them, checked with typed errors that
name the argument; shared by the write and the load entry points."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from kvdump import _arguments
from kvdump.errors import KvdumpTypeError, KvdumpValueError

IntsLike = torch.Tensor | Sequence[int]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def as_int64(values: IntsLike, what: str) -> torch.Tensor:
    """Block ids or hashes as the 1-D int64 CPU tensor the ops take (tensors pass through)."""
    if isinstance(values, torch.Tensor):
        return values
    kind = "hash" if "hash" in what else "id"
    try:
        if isinstance(values, (str, bytes)):
            raise TypeError(f"got {type(values).__name__} {values!r}")
        items = list(values)
    except TypeError as exc:
        raise KvdumpTypeError(f"{what} must be a tensor or a sequence of ints: {exc}") from None
    checked: list[int] = []
    for i, v in enumerate(items):
        # A bool is no block's id or hash (as a bool tensor is refused), and a float is refused, not
        # truncated to one.
        value = _arguments.integer(f"{what}[{i}]", v)
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise KvdumpValueError(f"{what}[{i}] = {value} does not fit a signed 64-bit {kind}")
        checked.append(value)
    return torch.tensor(checked, dtype=torch.int64)


def layer_index(layer: Any) -> int:
    """``layer`` as a non-negative int32 layer index."""
    return _arguments.integer("layer", layer, minimum=0, maximum=2**31 - 1)


def layer_op_arguments(
    layer: Any, kv_cache: Any, v_cache: Any, block_ids: Any, block_hashes: Any
) -> tuple[int, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """The layer, cache and block arguments every kvdump op takes, in its schema's order, each
    checked on its own so that an error names the bad one."""
    return (
        layer_index(layer),
        _arguments.tensor("kv_cache", kv_cache),
        _arguments.tensor("v_cache", v_cache, optional=True),
        as_int64(block_ids, "block_ids"),
        as_int64(block_hashes, "block_hashes"),
    )

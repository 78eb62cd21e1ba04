"""The dtypes the reference model runs in, by the names the PD config file and the demo's ``--dtype``
spell. Names rather than torch dtypes, so that checking a config file needs no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvdump.errors import KvdumpValueError

if TYPE_CHECKING:
    import torch

MODEL_DTYPES = ("float32", "bfloat16", "float16")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name``, one of :data:`MODEL_DTYPES`."""
    if name not in MODEL_DTYPES:
        raise KvdumpValueError(f"dtype must be one of {', '.join(MODEL_DTYPES)}, got {name!r}")
    import torch

    return getattr(torch, name)

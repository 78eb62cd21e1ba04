"""What ``torch.compile`` needs to trace a forward that calls kvdump's ops: fake kernels (the ops
return nothing and, in the loads, mutate their destination in place, so tracing them does no
work; they double as the Meta kernels, which refuse real meta tensors), fake ``kvdump::Writer`` and
``kvdump::Loader`` classes rebuilt from the state the C++ classes flatten to, and the ops marked side-effectful so that
no graph pass drops a call whose result nobody reads.

Imported by ``kvdump`` itself; nothing here is public."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensor

from kvdump import _C  # noqa: F401  (registers the ops and the class this module describes)

_CLASSES = ("__torch__.torch.classes.kvdump.Writer", "__torch__.torch.classes.kvdump.Loader")
_OPS = (
    torch.ops.kvdump.write_cache_store.default,
    torch.ops.kvdump.load_cache_store.default,
    torch.ops.kvdump.load_cache_store_async.default,
)


def _register_fake_context(name: str) -> type:
    """The fake of ``torch.classes.kvdump.<name>``: stands in for a writer or a loader while a graph
    is traced, where only its identity matters."""

    class FakeContext:
        def __init__(self, ticket: int) -> None:
            self.ticket = ticket

        @classmethod
        def __obj_unflatten__(cls, flattened: tuple[tuple[str, Any], ...]) -> FakeContext:
            return cls(**dict(flattened))

    FakeContext.__name__ = FakeContext.__qualname__ = f"Fake{name}"
    return torch._library.register_fake_class(f"kvdump::{name}")(FakeContext)


FakeWriter = _register_fake_context("Writer")
FakeLoader = _register_fake_context("Loader")


def _refuse_real_meta_tensors(
    kv_cache: torch.Tensor, v_cache: torch.Tensor | None, block_ids: torch.Tensor, block_hashes: torch.Tensor
) -> None:
    """The fake kernels are also the ops' Meta kernels, so a real meta tensor (not one standing in
    for a real tensor while tracing) arrives here in eager mode: refuse it as the real kernel
    refuses any tensor without data, with the same typed error."""

    def real_meta(t: torch.Tensor | None) -> bool:
        return t is not None and t.device.type == "meta" and not isinstance(t, FakeTensor)

    problem = None
    if real_meta(kv_cache):
        problem = "kv_cache is on the meta device and holds no data"
    elif real_meta(v_cache):
        problem = "k_cache and v_cache are on different devices (v_cache is on the meta device)"
    elif real_meta(block_ids):
        problem = "block_ids must be on the CPU, got meta"
    elif real_meta(block_hashes):
        problem = "block_hashes must be on the CPU, got meta"
    if problem is not None:
        raise ValueError(f"[kvdump:INVALID_ARGUMENT] {problem}")


def _fake_call(
    context: Any,
    layer: int,
    kv_cache: torch.Tensor,
    v_cache: torch.Tensor | None,
    block_ids: torch.Tensor,
    block_hashes: torch.Tensor,
    request: str = "",
) -> None:
    """Every op's fake kernel: nothing to compute (no outputs; the loads mutate in place)."""
    _refuse_real_meta_tensors(kv_cache, v_cache, block_ids, block_hashes)


for _name in ("write_cache_store", "load_cache_store", "load_cache_store_async"):
    torch.library.register_fake(f"kvdump::{_name}")(_fake_call)

for _op in _OPS:
    torch.fx.node.has_side_effect(_op)


class _ContextIsNeverCopied(logging.Filter):
    """Tracing tries to deep-copy every custom object and warns when it cannot. A writer or a loader
    owns threads and a store, so it has no copy by design: tracing then uses the object itself,
    which the fake kernels never touch. The warning says nothing a user can act on, so drop it for
    these classes only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.args and isinstance(record.args, tuple) and record.args[0] in _CLASSES)


logging.getLogger("torch._library.fake_class_registry").addFilter(_ContextIsNeverCopied())

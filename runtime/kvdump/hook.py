"""The wrapped model forward: one writer cycle around each call of the model's forward."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from kvdump.writer import AsyncWriter

M = TypeVar("M")


def wrap_model(model: M, writer: AsyncWriter, *, method: str = "forward", timeout: float | None = None) -> M:
    """Wrap ``model.<method>`` so that every call runs inside one writer cycle.

    Before the call: ``writer.init()``. After it returns: ``writer.wait_all_done(timeout)``, which
    raises :class:`kvdump.WriteError` if any layer failed to store, and publishes the cycle's blocks.
    If the call raises (or the barrier times out): ``writer.abort()`` and the exception propagates.
    Either way the writer ends idle. The per-layer ``write_cache_store`` calls are made by the model
    itself (e.g. a layer hook). Wrapping twice is refused. Returns the same model object."""
    original: Callable[..., Any] = getattr(model, method)
    if getattr(original, "__kvdump_writer__", None) is not None:
        raise ValueError(f"{type(model).__name__}.{method} is already wrapped by kvdump")

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with writer.cycle(timeout):
            return original(*args, **kwargs)

    wrapped.__kvdump_writer__ = writer  # type: ignore[attr-defined]
    wrapped.__kvdump_original__ = original  # type: ignore[attr-defined]
    setattr(model, method, wrapped)
    return model


def unwrap_model(model: M, *, method: str = "forward") -> M:
    """Undo :func:`wrap_model`."""
    current = getattr(model, method)
    original = getattr(current, "__kvdump_original__", None)
    if original is None:
        raise ValueError(f"{type(model).__name__}.{method} is not wrapped by kvdump")
    delattr(model, method)
    if getattr(model, method) != original:
        setattr(model, method, original)
    return model

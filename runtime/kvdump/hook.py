"""The wrapped model forward: one writer cycle around each call of the model's forward."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from kvdump import _arguments
from kvdump.errors import KvdumpTypeError, KvdumpValueError
from kvdump.save_policy import run_in_cycle, save_error_policy
from kvdump.writer import AsyncWriter

M = TypeVar("M")


def wrap_model(
    model: M,
    writer: AsyncWriter,
    *,
    method: str = "forward",
    timeout: float | None = None,
    on_save_error: str = "raise",
) -> M:
    """Wrap ``model.<method>`` so that every call runs inside one writer cycle.

    Before the call: ``writer.init()``. After it returns: ``writer.wait_all_done(timeout)``, which
    publishes the cycle's blocks. If the call raises: ``writer.abort()`` and the exception
    propagates, whatever ``on_save_error`` says. Either way the writer ends idle.

    ``on_save_error`` decides what a save that fails after a successful call does:

    - ``"raise"`` (default): the barrier's :class:`kvdump.WriteError` (or :class:`kvdump.WriteTimeout`,
      after an abort) propagates and the call's output is lost;
    - ``"report"``: the call's output is returned; nothing of the failed requests is committed, the
      failure is counted in ``writer.stats()`` (``save_failures_reported``,
      ``requests_failed_reported``) and logged once on the ``"kvdump"`` logger with the failed
      requests, status code and key.

    The per-layer ``write_cache_store`` calls are made by the model itself (e.g. a layer hook).
    Wrapping twice is refused. Returns the same model object."""
    # Checked now: a wrong writer would otherwise surface only at the first forward, as an
    # AttributeError from deep inside the cycle.
    if not isinstance(writer, AsyncWriter):
        raise KvdumpTypeError(f"writer must be a kvdump.AsyncWriter, got {type(writer).__name__} {writer!r}")
    deadline_s = _arguments.seconds("timeout", timeout, optional=True)
    policy = save_error_policy(on_save_error)
    original: Callable[..., Any] = getattr(model, method)
    if getattr(original, "__kvdump_writer__", None) is not None:
        raise KvdumpValueError(f"{type(model).__name__}.{method} is already wrapped by kvdump")

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        call = functools.partial(original, *args, **kwargs)
        return run_in_cycle(writer, call, timeout=deadline_s, on_save_error=policy).result

    wrapped.__kvdump_writer__ = writer  # type: ignore[attr-defined]
    setattr(model, method, wrapped)
    return model

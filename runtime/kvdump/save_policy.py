"""What a forward run inside a writer cycle does when the forward succeeded but its save failed.

``on_save_error="raise"`` lets the barrier's error (:class:`kvdump.WriteError`,
:class:`kvdump.WriteTimeout`, ...) propagate, as ``writer.cycle()`` does. ``"report"`` keeps the
forward's output instead: a failed save never loses the forward. The failure is then

- left behind: the writer is idle, and nothing of the failed requests is committed (the barrier
  withholds a failed request's commit records, and an aborted or timed-out cycle publishes
  nothing), while the cycle's other requests are published as usual;
- counted on the writer (``stats()["save_failures_reported"]`` and
  ``["requests_failed_reported"]``);
- logged once per cycle on the ``"kvdump"`` logger, naming the failed requests, the status code and
  the key.

Under ``"report"`` a write that finds the queue full for its whole ``submit_timeout`` (a stalled
store) fails its request instead of raising inside the forward (``init(full_queue="fail_request")``),
and the writes after it in the same forward fail theirs at once.

The choice covers only errors of the save. An exception of the forward itself always propagates
(after the cycle is aborted), and so does a :class:`kvdump.LifecycleError` from the barrier: that one
means the writer was misused or closed under the forward, which no caller should learn from a log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

from kvdump import _arguments
from kvdump.errors import KvdumpError, LifecycleError, WriteError
from kvdump.writer import AsyncWriter

SAVE_ERROR_POLICIES = ("raise", "report")

logger = logging.getLogger("kvdump")

T = TypeVar("T")


class CycleOutcome(NamedTuple, Generic[T]):
    """What :func:`run_in_cycle` observed: the forward's result, and the save error it reported
    (None when the save succeeded)."""

    result: T
    save_error: KvdumpError | None


def save_error_policy(value: object, name: str = "on_save_error") -> str:
    """``value`` if it names a policy (``"raise"`` or ``"report"``); a typed error naming ``name``
    otherwise."""
    return _arguments.choice(name, value, SAVE_ERROR_POLICIES)


def run_in_cycle(
    writer: AsyncWriter,
    forward: Callable[[], T],
    *,
    timeout: float | None = None,
    on_save_error: str = "raise",
) -> CycleOutcome[T]:
    """Call ``forward()`` inside ``writer.cycle(timeout)`` and apply the ``on_save_error`` policy to a
    save that fails after the forward returned (see the module docstring)."""
    policy = save_error_policy(on_save_error)
    returned = False
    try:
        # Under "report" a stalled store fails the requests whose writes found the queue full
        # instead of raising inside the forward, which would lose its output.
        with writer.cycle(timeout, full_queue="fail_request" if policy == "report" else "raise"):
            result = forward()
            returned = True
    except KvdumpError as error:
        if not returned or policy == "raise" or isinstance(error, LifecycleError):
            raise
        _leave_idle(writer)
        _report(writer, error)
        return CycleOutcome(result, error)
    return CycleOutcome(result, None)


def _leave_idle(writer: AsyncWriter) -> None:
    # The barrier returns idle after a WriteError and cycle() aborts after a timeout; this catches
    # whatever else left the cycle open (an abort that itself failed), so the next forward can
    # init. Deadline 0: the barrier already spent the caller's; only a gather in progress is waited
    # for, so the caller's blocks are safe to reuse once this returns.
    if writer.state in ("accepting", "draining"):
        writer.abort(0)


def _report(writer: AsyncWriter, error: KvdumpError) -> None:
    failed_requests = error.failed_requests if isinstance(error, WriteError) else ()
    writer._count_reported_save_failure(len(failed_requests))
    if isinstance(error, WriteError):
        # A task without a request name is withheld under the name "", which names nothing here.
        unpublished = f"failed requests, not committed: {', '.join(failed_requests) or 'none named'}"
    else:
        unpublished = "the cycle was aborted: none of its requests committed"
    logger.error(
        "kvdump save failed after a successful forward; its output is returned (on_save_error='report'); "
        "%s; code %s, key %s: %s",
        unpublished,
        error.code.name,
        error.key or "-",
        error,
        extra={
            "kvdump_failed_requests": failed_requests,
            "kvdump_code": error.code,
            "kvdump_key": error.key,
        },
    )

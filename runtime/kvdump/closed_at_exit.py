"""Writers and loaders still open when the interpreter exits are closed first. Their workers may be
waiting for the GIL to run a Python store's call; joining them must happen before the interpreter
tears down, not during it.

Then kvdump's threads stop calling into Python, and the exit waits up to
``PYTHON_CALLS_EXIT_WAIT_S`` for the calls still inside Python (a store call or task that a close
abandoned) to come back out: on this Python a thread that takes the GIL while the interpreter
finalizes is ended mid-call, which would end the whole process abnormally. A call still inside after
that wait is one that does not return (a stalled store), and so never takes the GIL again."""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Protocol

from kvdump import _C


class _Closable(Protocol):
    def close(self) -> None: ...


_open: weakref.WeakSet[_Closable] = weakref.WeakSet()
_lock = threading.Lock()

PYTHON_CALLS_EXIT_WAIT_S = 5.0


# Registered before _close_all, so that it runs after it (exit handlers run last-registered first).
@atexit.register
def _stop_python_calls() -> None:
    _C.refuse_python_calls_at_exit(PYTHON_CALLS_EXIT_WAIT_S)


def close_at_exit(engine: _Closable) -> None:
    """Close ``engine`` at interpreter exit if it is still alive then (held weakly). Thread-safe."""
    with _lock:
        _open.add(engine)


@atexit.register
def _close_all() -> None:
    with _lock:
        engines = list(_open)
    for engine in engines:
        engine.close()

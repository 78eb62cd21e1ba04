"""Writers and loaders still open when the interpreter exits are closed first. Their workers may be
waiting for the GIL to run a Python store's call; joining them must happen before the interpreter
tears down, not during it."""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Protocol


class _Closable(Protocol):
    def close(self) -> None: ...


_open: weakref.WeakSet[_Closable] = weakref.WeakSet()
_lock = threading.Lock()


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

"""One store per URL per process, shared by the connector's scheduler and worker sides.

With vLLM's single-process executor both sides live in one process and must see the same
``memory://`` store; for every other store, one client per process is simply cheaper."""

from __future__ import annotations

import threading
from typing import Any

from kvdump.stores import open_store

_lock = threading.Lock()
_stores: dict[str, Any] = {}


def shared_store(url: str) -> Any:
    """The store ``url`` names, opened once per process (thread-safe)."""
    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = open_store(url)
        return store


def forget_store(url: str) -> None:
    """Drop this process's handle on ``url`` (the next :func:`shared_store` opens it anew)."""
    with _lock:
        _stores.pop(url, None)


def provide_store(url: str, store: Any) -> None:
    """Make connectors of this process that name ``url`` use ``store``, an already opened store (a
    custom :class:`kvdump.PythonStore`, or one shared with code outside vLLM)."""
    with _lock:
        _stores[url] = store

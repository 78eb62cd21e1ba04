"""A fault-injection store for the tests of reported save failures: it refuses, with
:class:`kvdump.StoreFullError`, the puts of the keys a predicate picks, and forwards everything else
to a native store. Which requests fail is then decided by their block keys, not by timing or by how
full a store happens to be."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import kvdump
from forwarding_store import ForwardingStore
from kvdump import _C


def no_room(key: str) -> Exception:
    return kvdump.StoreFullError("injected: no room for this block", key=key)


class FailingStore(ForwardingStore):
    """Refuses the puts for which ``fails(key)`` is true, raising ``error(key)`` (by default a
    :class:`kvdump.StoreFullError`), and records them in ``refused``."""

    def __init__(
        self,
        inner: kvdump.CacheStore,
        fails: Callable[[str], bool],
        error: Callable[[str], Exception] = no_room,
    ) -> None:
        super().__init__("failing", inner)
        self.fails = fails
        self.error = error
        self.refused: list[str] = []
        self._lock = threading.Lock()

    def put(self, key: str, value: memoryview) -> None:
        if self.fails(key):
            with self._lock:
                self.refused.append(key)
            raise self.error(key)
        super().put(key, value)


def block_keys(hashes: Iterable[int], layers: Iterable[int], namespace: str = "kvdump") -> set[str]:
    """The record keys of ``hashes`` at ``layers`` in TP key space 0 of 1."""
    layers = list(layers)
    return {_C.block_key(namespace, 0, 1, h, layer) for h in hashes for layer in layers}

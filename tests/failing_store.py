"""A fault-injection store for the tests of reported save failures: it refuses, with
:class:`kvdump.StoreFullError`, the puts of the keys a predicate picks, and forwards everything else
to a native store. Which requests fail is then decided by their block keys, not by timing or by how
full a store happens to be."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import kvdump
from kvdump import _C

C = kvdump.CacheStore


class FailingStore(kvdump.PythonStore):
    """Refuses the puts for which ``fails(key)`` is true and records them in ``refused``."""

    def __init__(self, inner: kvdump.CacheStore, fails: Callable[[str], bool]) -> None:
        super().__init__("failing")
        self.inner = inner
        self.fails = fails
        self.refused: list[str] = []
        self._lock = threading.Lock()

    def put(self, key: str, value: memoryview) -> None:
        if self.fails(key):
            with self._lock:
                self.refused.append(key)
            raise kvdump.StoreFullError("injected: no room for this block", key=key)
        C.put(self.inner, key, bytes(value))

    def get(self, key: str) -> bytes | None:
        return C.get(self.inner, key)

    def exists(self, key: str) -> bool:
        return C.exists(self.inner, key)

    def remove(self, key: str) -> bool:
        return C.remove(self.inner, key)


def block_keys(hashes: Iterable[int], layers: Iterable[int], namespace: str = "kvdump") -> set[str]:
    """The record keys of ``hashes`` at ``layers`` in TP key space 0 of 1."""
    layers = list(layers)
    return {_C.block_key(namespace, 0, 1, h, layer) for h in hashes for layer in layers}

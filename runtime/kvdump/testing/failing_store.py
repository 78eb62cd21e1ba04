"""A store that refuses the puts of the keys a predicate picks, for testing how save failures are
reported: which requests fail is then decided by their block keys, not by timing or by how full a
store happens to be."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from kvdump import _C
from kvdump.errors import StoreFullError
from kvdump.key_space import KeySpace
from kvdump.testing.forwarding_store import ForwardingStore


def no_room(key: str) -> Exception:
    return StoreFullError("injected: no room for this block", key=key)


class FailingStore(ForwardingStore):
    """Refuses the puts for which ``fails(key)`` is true, raising ``error(key)`` (by default a
    :class:`kvdump.StoreFullError`), and records them in ``refused``; forwards everything else to
    ``inner``."""

    def __init__(
        self,
        inner: _C.CacheStore,
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


def block_keys(hashes: Iterable[int], layers: Iterable[int], key_space: KeySpace | None = None) -> set[str]:
    """The record keys of ``hashes`` at ``layers`` in ``key_space`` (default ``KeySpace()``): what
    ``fails`` compares against to refuse chosen blocks."""
    layers = list(layers)
    space = KeySpace() if key_space is None else key_space
    return {space.block_key(h, layer) for h in hashes for layer in layers}

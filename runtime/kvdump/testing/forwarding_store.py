"""A Python store that forwards every call to another store: the base of the stores here that
inject a failure or a stall into some calls and pass the rest through unchanged."""

from __future__ import annotations

from kvdump import _C

C = _C.CacheStore


class ForwardingStore(_C.PythonStore):
    """Forwards put, get, exists, remove and discard to ``inner``; subclasses override what they intercept
    and call ``super()`` to pass the call on. Thread-safe as ``inner`` is."""

    def __init__(self, name: str, inner: _C.CacheStore) -> None:
        super().__init__(name)
        self.inner = inner

    def put(self, key: str, value: memoryview) -> None:
        C.put(self.inner, key, value)

    def get(self, key: str) -> bytes | None:
        return C.get(self.inner, key)

    def exists(self, key: str) -> bool:
        return C.exists(self.inner, key)

    def remove(self, key: str) -> bool:
        return C.remove(self.inner, key)

    def discard(self, keys: list[str]) -> None:
        C.discard(self.inner, keys)

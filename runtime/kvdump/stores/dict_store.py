"""``dict://``: a complete store written in Python, the example to start a plug-in from and a
testing aid (the tests and benchmarks use it as "a store in Python"; :mod:`kvdump.testing` re-exports it).

It implements only the four required methods of :class:`kvdump.PythonStore`, so every optional
method (batches, get_into) takes the trampoline's fallback path. ``capacity_bytes`` makes it refuse
puts with :class:`kvdump.StoreFullError`, the way a real bounded store does."""

from __future__ import annotations

import threading

from kvdump import _C
from kvdump.errors import StoreFullError


class DictStore(_C.PythonStore):
    """Values in a dict under a lock; thread-safe. Refuses puts past ``capacity_bytes``."""

    def __init__(self, capacity_bytes: int = 1 << 30) -> None:
        super().__init__("dict")
        self.capacity_bytes = capacity_bytes
        self._values: dict[str, bytes] = {}
        self._used = 0
        self._lock = threading.Lock()

    def put(self, key: str, value: memoryview) -> None:
        data = bytes(value)  # the view is lent only for this call
        with self._lock:
            used = self._used - len(self._values.get(key, b""))
            if used + len(data) > self.capacity_bytes:
                raise StoreFullError(f"dict store full: {used} of {self.capacity_bytes} bytes used", key=key)
            self._values[key] = data
            self._used = used + len(data)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._values.get(key)

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._values

    def remove(self, key: str) -> bool:
        with self._lock:
            value = self._values.pop(key, None)
            if value is None:
                return False
            self._used -= len(value)
            return True


def open_dict_store(url: str) -> DictStore:
    """Entry-point factory for ``dict://``."""
    return DictStore()


# The values live in this process's memory and go with it: kvdump.stores.outlives_process reads this.
open_dict_store.in_process = True  # type: ignore[attr-defined]

"""``memory://``: the embedded default, an in-process arena (``MemoryStore``, implemented in C++ in
``cpp/src/stores/memory_store.cc`` over ``cpp/src/stores/slab_arena.cc``). Its data dies with the process."""

from __future__ import annotations

from urllib.parse import urlparse

from kvdump import _C
from kvdump.stores.url_options import url_options

MemoryStore = _C.MemoryStore

_OPTIONS = {
    "capacity_bytes": int,
    "eviction": str,
    "high_watermark": float,
    "low_watermark": float,
    "slab_bytes": int,
    "pin_memory": str,
}


def open_memory(url: str) -> _C.CacheStore:
    """``memory://?capacity_bytes=...&eviction=evict|refuse&...``: a new ``MemoryStore``."""
    return MemoryStore(**url_options(urlparse(url).query, _OPTIONS))


# Whether the data outlives the opening process is declared next to the factory, so that no caller
# has to know schemes by name (kvdump.stores.outlives_process reads it).
open_memory.in_process = True  # type: ignore[attr-defined]

"""kvdump's stores, one module each, and opening them by URL.

| scheme | module | store |
|---|---|---|
| ``memory://`` | :mod:`kvdump.stores.memory` | ``MemoryStore`` (C++: ``cpp/src/stores/memory_store.cc``) |
| ``file:///path`` | :mod:`kvdump.stores.file` | ``FileStore`` (C++: ``cpp/src/stores/file_store.cc``) |
| ``mooncake://master:port`` | :mod:`kvdump.stores.mooncake` | ``MooncakeStore`` (Python, on Mooncake's client) |
| ``dict://`` (example) | :mod:`kvdump.stores.dict_store` | ``DictStore``, a complete store written in Python |

Every scheme, kvdump's own included, is registered under the entry point group ``kvdump.stores``
(name = URL scheme, value = a callable taking the URL string and returning a ``kvdump.CacheStore``,
e.g. an instance of a ``kvdump.PythonStore`` subclass), so a plug-in is found the same way.

A plug-in whose data lives inside the process that opened it declares so by setting
``in_process = True`` on its factory; :func:`outlives_process` then answers False for its scheme,
as it does for ``memory://``, and the PD roles refuse it."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from urllib.parse import urlparse

from kvdump import _C
from kvdump.errors import KvdumpTypeError, KvdumpValueError, UnsupportedError

StoreFactory = Callable[[str], _C.CacheStore]
ENTRY_POINT_GROUP = "kvdump.stores"


def registered_schemes() -> list[str]:
    """Every scheme ``open_store`` understands: kvdump's own and installed plug-ins alike."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def _factory(url: str) -> tuple[str, StoreFactory]:
    if not isinstance(url, str):
        raise KvdumpTypeError(f"store url must be a str such as 'memory://', got {type(url).__name__} {url!r}")
    scheme = urlparse(url).scheme
    if not scheme:
        raise KvdumpValueError(f"store URL needs a scheme (one of {registered_schemes()}), got {url!r}")
    matches = entry_points(group=ENTRY_POINT_GROUP, name=scheme)
    if not matches:
        raise UnsupportedError(f"no store for scheme {scheme!r}; known: {registered_schemes()}")
    # A plug-in may not take over one of kvdump's schemes: kvdump's own entry wins.
    ours = [ep for ep in matches if ep.dist is not None and ep.dist.name == "kvdump"]
    return scheme, (ours or list(matches))[0].load()


def outlives_process(url: str) -> bool:
    """Whether what a store opened from ``url`` holds is still there after the opening process
    exits, so another process can read it: False for ``memory://`` and for plug-ins whose factory
    sets ``in_process = True``. Opens nothing. Raises as :func:`open_store` does for a URL without
    a known scheme."""
    _, factory = _factory(url)
    return not getattr(factory, "in_process", False)


def open_store(url: str) -> _C.CacheStore:
    """Open the store a URL names, e.g. ``memory://?capacity_bytes=1073741824``,
    ``file:///mnt/kv?fsync=true`` or
    ``mooncake://127.0.0.1:50051?metadata_server=http://127.0.0.1:8080/metadata&protocol=tcp``.
    Unknown schemes raise :class:`UnsupportedError` listing the known ones; bad options raise
    :class:`KvdumpValueError` naming the option."""
    scheme, factory = _factory(url)
    store = factory(url)
    if not isinstance(store, _C.CacheStore):
        raise TypeError(f"store plug-in for {scheme!r} returned {type(store).__name__}, not a kvdump.CacheStore")
    return store

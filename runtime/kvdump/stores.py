"""Opening stores by URL: ``memory://``, ``file:///path``, ``mooncake://master:port`` and plug-ins
registered under the entry point group ``kvdump.stores`` (name = URL scheme, value = a callable
taking the URL string and returning a ``kvdump.CacheStore``, e.g. an instance of a
``kvdump.PythonStore`` subclass).

A plug-in whose data lives inside the process that opened it declares so by setting
``in_process = True`` on its factory; :func:`outlives_process` then answers False for its scheme,
as it does for ``memory://``, and the PD roles refuse it."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from urllib.parse import parse_qs, urlparse

from kvdump import _C
from kvdump.errors import KvdumpTypeError, KvdumpValueError, UnsupportedError

StoreFactory = Callable[[str], _C.CacheStore]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _options(query: str, allowed: dict[str, type]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, values in parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
        if name not in allowed:
            raise KvdumpValueError(f"unknown store option {name!r}; expected one of {sorted(allowed)}")
        raw = values[-1]
        kind = allowed[name]
        if kind is bool:
            if raw.lower() not in _TRUE | _FALSE:
                raise KvdumpValueError(f"store option {name!r} must be true or false, got {raw!r}")
            out[name] = raw.lower() in _TRUE
        else:
            try:
                out[name] = kind(raw)
            except ValueError:
                raise KvdumpValueError(f"store option {name!r} must be {kind.__name__}, got {raw!r}") from None
    return out


def _open_memory(url: str) -> _C.CacheStore:
    options = _options(
        urlparse(url).query,
        {
            "capacity_bytes": int,
            "eviction": str,
            "high_watermark": float,
            "low_watermark": float,
            "slab_bytes": int,
            "pin_memory": str,
        },
    )
    return _C.MemoryStore(**options)


def _open_file(url: str) -> _C.CacheStore:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise KvdumpValueError(f"file store URL must be file:///absolute/path, got {url!r}")
    if not parsed.path:
        raise KvdumpValueError(f"file store URL has no path: {url!r}")
    options = _options(parsed.query, {"fsync": bool})
    return _C.FileStore(parsed.path, **options)


def _open_mooncake(url: str) -> _C.CacheStore:
    parsed = urlparse(url)
    if not parsed.netloc:
        raise KvdumpValueError(f"Mooncake store URL must be mooncake://master-host:port?..., got {url!r}")
    options = _options(
        parsed.query,
        {
            "metadata_server": str,
            "local_hostname": str,
            "protocol": str,
            "device_name": str,
            "global_segment_size": int,
            "local_buffer_size": int,
            "read_retry_seconds": float,
            "overwrite": bool,
        },
    )
    from kvdump.mooncake_store import MooncakeStore

    return MooncakeStore(parsed.netloc, **options)  # type: ignore[arg-type]


# Whether the data outlives the process that opened the store is set here, next to each factory,
# so that no caller has to know schemes by name.
_open_memory.in_process = True  # type: ignore[attr-defined]

_BUILTIN: dict[str, StoreFactory] = {"memory": _open_memory, "file": _open_file, "mooncake": _open_mooncake}


def registered_schemes() -> list[str]:
    """Every scheme ``open_store`` understands: the built-in ones and installed plug-ins."""
    return sorted(set(_BUILTIN) | {ep.name for ep in entry_points(group="kvdump.stores")})


def _factory(url: str) -> tuple[str, StoreFactory]:
    if not isinstance(url, str):
        raise KvdumpTypeError(f"store url must be a str such as 'memory://', got {type(url).__name__} {url!r}")
    scheme = urlparse(url).scheme
    if not scheme:
        raise KvdumpValueError(f"store URL needs a scheme (one of {registered_schemes()}), got {url!r}")
    factory = _BUILTIN.get(scheme)
    if factory is None:
        matches = [ep for ep in entry_points(group="kvdump.stores") if ep.name == scheme]
        if not matches:
            raise UnsupportedError(f"no store for scheme {scheme!r}; known: {registered_schemes()}")
        factory = matches[0].load()
    return scheme, factory


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

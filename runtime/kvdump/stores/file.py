"""``file:///path``: one file per record under a directory (``FileStore``, implemented in C++ in
``cpp/src/stores/file_store.cc``); local or shared filesystems, readable by other processes."""

from __future__ import annotations

from urllib.parse import urlparse

from kvdump import _C
from kvdump.errors import KvdumpValueError
from kvdump.stores.url_options import url_options

FileStore = _C.FileStore


def open_file(url: str) -> _C.CacheStore:
    """``file:///absolute/path?fsync=true|false``: a ``FileStore`` rooted at the path."""
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise KvdumpValueError(f"file store URL must be file:///absolute/path, got {url!r}")
    if not parsed.path:
        raise KvdumpValueError(f"file store URL has no path: {url!r}")
    return FileStore(parsed.path, **url_options(parsed.query, {"fsync": bool}))

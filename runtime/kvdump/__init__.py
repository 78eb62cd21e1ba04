"""kvdump: an asynchronous KV-cache writer for prefill/decode disaggregated LLM serving.

``import kvdump`` loads torch first (the native extension links libtorch), then the private
extension ``kvdump._C``, and re-exports the public API (README.md; how it works: docs/design.md).
"""

from __future__ import annotations

import importlib.metadata as _metadata

import torch  # noqa: F401  (loads libtorch before the extension that links it)

from kvdump import (
    _C,
    compile_support,  # noqa: F401  (fake kernels for torch.compile)
)
from kvdump.cache_ops import write_cache_store
from kvdump.commit import lookup
from kvdump.errors import (
    AbortedError,
    ChecksumError,
    KeyNotFoundError,
    KeySpaceMismatchError,
    KvdumpError,
    KvdumpTypeError,
    KvdumpValueError,
    LeaseHeldError,
    LifecycleError,
    StatusCode,
    StoreError,
    StoreFullError,
    UnsupportedError,
    WriteError,
    WriteTimeout,
)
from kvdump.hook import wrap_model
from kvdump.key_space import KeySpace
from kvdump.loader import KVLoader, load_cache_store
from kvdump.stores import open_store
from kvdump.writer import AsyncWriter, CycleReport
from kvdump.writer_options import WriterOptions

CacheStore = _C.CacheStore
DelayedStore = _C.DelayedStore
FileStore = _C.FileStore
MemoryStore = _C.MemoryStore
PythonStore = _C.PythonStore

__version__ = _metadata.version("kvdump")  # one source: pyproject.toml

__all__ = [
    "AbortedError",
    "AsyncWriter",
    "CacheStore",
    "ChecksumError",
    "CycleReport",
    "DelayedStore",
    "FileStore",
    "KeyNotFoundError",
    "KeySpace",
    "KvdumpError",
    "KVLoader",
    "KvdumpTypeError",
    "KvdumpValueError",
    "KeySpaceMismatchError",
    "LeaseHeldError",
    "LifecycleError",
    "MemoryStore",
    "PythonStore",
    "StatusCode",
    "StoreError",
    "StoreFullError",
    "UnsupportedError",
    "WriteError",
    "WriteTimeout",
    "WriterOptions",
    "load_cache_store",
    "open_store",
    "lookup",
    "wrap_model",
    "write_cache_store",
]

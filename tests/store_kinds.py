"""Every kind of store the shared conformance suite runs against, made fresh per test."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import kvdump
from kvdump.stores.dict_store import DictStore

STORE_KINDS = ["memory", "file", "delayed", "python", "mooncake"]

# Documented differences, each tested for what the store does instead (see MooncakeStore):
FIRST_WRITER_WINS = {"mooncake"}  # a put of an existing key keeps the stored value
NO_EMPTY_VALUES = {"mooncake"}  # an empty value is refused with UnsupportedError
READS_TAKE_LEASES = {"mooncake"}  # a read blocks remove() for a while (LeaseHeldError)


def mooncake_available() -> bool:
    try:
        import mooncake.store  # noqa: F401
    except ImportError:
        return False
    return True


def require_mooncake() -> None:
    """Skip without Mooncake locally; in CI its absence is a set-up error, never a silent skip."""
    if not mooncake_available():
        if os.environ.get("CI"):
            pytest.fail("Mooncake is not installed in CI (scripts/setup.sh must install it)")
        pytest.skip("mooncake-transfer-engine-non-cuda is not installed")


def make_store(kind: str, tmp_path: Path, mooncake_store: Callable[[], kvdump.CacheStore]) -> kvdump.CacheStore:
    if kind == "memory":
        return kvdump.MemoryStore(64 << 20)
    if kind == "file":
        return kvdump.FileStore(str(tmp_path / "files"))
    if kind == "delayed":
        return kvdump.DelayedStore(kvdump.MemoryStore(64 << 20), put_delay=0.0005, get_delay=0.0005)
    if kind == "python":
        return DictStore()
    if kind == "mooncake":
        return mooncake_store()
    raise ValueError(kind)

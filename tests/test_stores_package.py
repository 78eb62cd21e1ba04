"""kvdump.stores: each store in its own module, all found through the kvdump.stores entry points."""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points

import pytest

import kvdump
from kvdump.stores import ENTRY_POINT_GROUP, registered_schemes


def test_kvdumps_own_schemes_are_entry_points_of_the_kvdump_distribution():
    ours = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.dist and ep.dist.name == "kvdump"}
    assert ours == {
        "memory": "kvdump.stores.memory:open_memory",
        "file": "kvdump.stores.file:open_file",
        "mooncake": "kvdump.stores.mooncake:open_mooncake",
    }
    assert {"memory", "file", "mooncake"} <= set(registered_schemes())


def test_each_module_opens_its_own_store(tmp_path):
    from kvdump.stores.file import open_file
    from kvdump.stores.memory import open_memory

    assert isinstance(open_memory("memory://?capacity_bytes=1048576"), kvdump.MemoryStore)
    assert isinstance(open_file(f"file://{tmp_path}"), kvdump.FileStore)
    with pytest.raises(kvdump.KvdumpValueError, match="capacity"):
        open_memory("memory://?capacity=1")


def test_the_old_mooncake_module_name_still_imports_with_a_deprecation_warning():
    sys.modules.pop("kvdump.mooncake_store", None)
    with pytest.warns(DeprecationWarning, match="kvdump.stores.mooncake"):
        old = importlib.import_module("kvdump.mooncake_store")
    from kvdump.stores.mooncake import MooncakeStore

    assert old.MooncakeStore is MooncakeStore

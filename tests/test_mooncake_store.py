"""MooncakeStore against live Mooncake clusters on 127.0.0.1: zero-copy staging, error mapping, and
prefill and decode in two processes. The shared rules are in test_store_conformance.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

import kvdump
from support import require_mooncake

pytestmark = pytest.mark.usefixtures("mooncake_cluster")


class CountingClient:
    """Passes every call through to the real Mooncake client, counting them by name."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return target(*args, **kwargs)

        return call


@pytest.fixture
def fresh_store(mooncake_cluster: Any) -> Any:
    store = kvdump.open_store(mooncake_cluster.url(global_segment_size=0, local_buffer_size=32 << 20))
    yield store
    store.close()


def test_blocks_go_zero_copy_from_registered_staging(fresh_store: Any) -> None:
    counting = CountingClient(fresh_store._client)
    fresh_store._client = counting
    namespace = f"zc-{uuid.uuid4().hex[:8]}"
    writer = kvdump.AsyncWriter(
        fresh_store, num_threads=2, key_space=kvdump.KeySpace(namespace), staging_bytes=16 << 20
    )
    kv = torch.randn(2, 8, 16, 4, 32)
    hashes = list(range(100, 108))
    with writer.cycle():
        for layer in range(3):
            kvdump.write_cache_store(writer, layer, kv, list(range(8)), hashes)
    assert counting.calls["register_buffer"] >= 1
    assert counting.calls["batch_put_from"] >= 1
    # No block took the copying path: the only copied batch is the commit records'.
    assert counting.calls["put_batch"] == 1
    assert counting.calls["upsert_batch"] == counting.calls["batch_upsert_from"] == 0
    loader = kvdump.KVLoader(fresh_store, key_space=kvdump.KeySpace(namespace), num_threads=2, staging_bytes=16 << 20)
    out = torch.zeros_like(kv)
    loader.load(1, out, list(range(8)), hashes)
    assert torch.equal(out, kv)
    assert counting.calls["batch_get_into"] >= 1
    assert counting.calls["get"] == 0
    writer.close()
    loader.close()
    assert fresh_store._registered == {}
    assert counting.calls["unregister_buffer"] == counting.calls["register_buffer"]


def test_lookup_after_a_commit_counts_only_committed_blocks(fresh_store: Any) -> None:
    namespace = f"commit-{uuid.uuid4().hex[:8]}"
    writer = kvdump.AsyncWriter(fresh_store, num_threads=2, key_space=kvdump.KeySpace(namespace))
    kv = torch.randn(2, 4, 8, 2, 16)
    with writer.cycle():
        for layer in range(2):
            kvdump.write_cache_store(writer, layer, kv, [0, 1, 2], [11, 12, 13])
    writer.close()
    assert kvdump.lookup(fresh_store, [11, 12, 13, 14], key_space=kvdump.KeySpace(namespace), num_layers=2) == 3
    assert kvdump.lookup(fresh_store, [11, 12], key_space=kvdump.KeySpace(namespace), num_layers=3) == 0


def test_writing_the_same_blocks_again_succeeds_and_keeps_them(fresh_store: Any) -> None:
    # A second prefill of the same prefix re-puts existing keys through the zero-copy path.
    namespace = f"again-{uuid.uuid4().hex[:8]}"
    writer = kvdump.AsyncWriter(fresh_store, num_threads=2, key_space=kvdump.KeySpace(namespace))
    kv = torch.randn(2, 4, 8, 2, 16)
    for _ in range(2):
        with writer.cycle():
            for layer in range(2):
                kvdump.write_cache_store(writer, layer, kv, [0, 1, 2, 3], [31, 32, 33, 34])
    writer.close()
    assert kvdump.lookup(fresh_store, [31, 32, 33, 34], key_space=kvdump.KeySpace(namespace), num_layers=2) == 4
    loader = kvdump.KVLoader(fresh_store, key_space=kvdump.KeySpace(namespace), num_threads=1)
    out = torch.zeros_like(kv)
    loader.load(1, out, [0, 1, 2, 3], [31, 32, 33, 34])
    loader.close()
    assert torch.equal(out, kv)


def test_a_full_cluster_fails_the_write_with_store_full_and_commits_nothing(tmp_path: Path) -> None:
    from kvdump.mooncake_cluster import LocalMooncakeCluster

    with LocalMooncakeCluster(tmp_path / "logs") as cluster:
        # The only memory in this cluster is the client's own 16 MiB segment, and one block record
        # is larger than that, so Mooncake refuses it at once (eviction cannot make room).
        store = kvdump.open_store(cluster.url(global_segment_size=16 << 20, local_buffer_size=16 << 20))
        writer = kvdump.AsyncWriter(store, num_threads=2, staging_bytes=40 << 20)
        try:
            kv = torch.randn(2, 1, 520, 32, 128)  # one 17 MB block
            with pytest.raises(kvdump.WriteError) as info:
                with writer.cycle():
                    kvdump.write_cache_store(writer, 0, kv, [0], [77], request="big")
            assert info.value.code == kvdump.StatusCode.STORE_FULL
            assert info.value.request == "big"
            assert isinstance(info.value.__cause__, kvdump.StoreFullError)
            assert kvdump.lookup(store, [77]) == 0
        finally:
            writer.close()
            store.close()


def test_bad_urls_name_the_problem() -> None:
    with pytest.raises(kvdump.KvdumpValueError, match="mooncake://master-host:port"):
        kvdump.open_store("mooncake:///no-host")
    with pytest.raises(kvdump.KvdumpValueError, match="unknown store option 'segment'"):
        kvdump.open_store("mooncake://127.0.0.1:1?segment=5")
    with pytest.raises(kvdump.KvdumpValueError, match="'global_segment_size' must be int"):
        kvdump.open_store("mooncake://127.0.0.1:1?global_segment_size=big")


def test_prefill_process_writes_and_exits_then_decode_process_loads(mooncake_cluster: Any, tmp_path: Path) -> None:
    require_mooncake()
    url = mooncake_cluster.url(global_segment_size=0, local_buffer_size=32 << 20)
    namespace = f"pd-{uuid.uuid4().hex[:8]}"
    prefill = textwrap.dedent(
        f"""
        import kvdump, torch
        torch.manual_seed(1234)
        kv = [torch.randn(2, 6, 16, 4, 32) for _ in range(4)]
        store = kvdump.open_store({url!r})
        writer = kvdump.AsyncWriter(store, num_threads=2, key_space=kvdump.KeySpace({namespace!r}))
        with writer.cycle():
            for layer in range(4):
                kvdump.write_cache_store(writer, layer, kv[layer], [5, 4, 3, 2, 1, 0], [21, 22, 23, 24, 25, 26])
        writer.close()
        store.close()
        torch.save(kv, {str(tmp_path / "expected.pt")!r})
        """
    )
    done = subprocess.run([sys.executable, "-c", prefill], capture_output=True, text=True, timeout=120, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = torch.load(tmp_path / "expected.pt")
    store = kvdump.open_store(url)
    try:
        hashes = [21, 22, 23, 24, 25, 26]
        assert kvdump.lookup(store, hashes, key_space=kvdump.KeySpace(namespace), num_layers=4) == 6
        loader = kvdump.KVLoader(store, key_space=kvdump.KeySpace(namespace), num_threads=2)
        for layer in range(4):
            out = torch.zeros(2, 6, 16, 4, 32)
            loader.load(layer, out, [0, 1, 2, 3, 4, 5], hashes)
            # the prefill stored block id 5 under hash 21, 4 under 22, ...: decode reads them back in its own ids
            assert torch.equal(out, expected[layer][:, [5, 4, 3, 2, 1, 0]])
        loader.close()
    finally:
        store.close()


def test_the_local_cluster_command_serves_a_store_and_stops_on_sigterm() -> None:
    import signal

    command = [
        sys.executable,
        "-m",
        "kvdump.mooncake_cluster",
        "--rpc-port",
        "0",
        "--metadata-port",
        "0",
        "--storage-bytes",
        str(64 << 20),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("mooncake://127.0.0.1:"), url
        store = kvdump.open_store(url)
        store.put("cluster-cli/k", b"value")
        assert store.get("cluster-cli/k") == b"value"
        store.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        pids = [int(p) for p in process.stderr.read().split("PIDs [")[1].split("]")[0].split(", ")]  # type: ignore[union-attr]
        for pid in pids:  # master and storage service were stopped, not orphaned
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if process.poll() is None:
            process.kill()

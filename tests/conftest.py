"""Fixtures shared by the test modules."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Iterator

import pytest

import kvdump
from support import Gate, make_store, require_mooncake

# vLLM picks its platform when first imported; this machine has no GPU. The test command installs
# vLLM and sets KVDUMP_REQUIRE_VLLM=1, so there a missing vLLM fails the run; elsewhere the connector
# tests are left out when vLLM is not installed.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
VLLM_MISSING = os.environ.get("KVDUMP_REQUIRE_VLLM") != "1" and importlib.util.find_spec("vllm") is None
collect_ignore = ["test_vllm_connector.py"] if VLLM_MISSING else []


def pytest_report_header() -> str | None:
    return "vLLM is not installed: tests/test_vllm_connector.py is not collected" if VLLM_MISSING else None


@pytest.fixture
def make_writer() -> Iterator[Callable[..., kvdump.AsyncWriter]]:
    """Makes writers (default: a 64 MiB MemoryStore, 2 threads) and closes them after the test. Gates
    and the events in ``make.events`` are released first, so a failed test never leaves a worker
    blocked at teardown."""
    writers: list[kvdump.AsyncWriter] = []
    events: list[threading.Event] = []

    def make(store: kvdump.CacheStore | None = None, **kwargs: object) -> kvdump.AsyncWriter:
        store = store or kvdump.MemoryStore(capacity_bytes=64 << 20)
        kwargs.setdefault("num_threads", 2)
        writer = kvdump.AsyncWriter(store, **kwargs)  # type: ignore[arg-type]
        writers.append(writer)
        return writer

    make.events = events  # type: ignore[attr-defined]
    yield make
    for gate in Gate.live:
        gate.release.set()
    Gate.live.clear()
    for event in events:
        event.set()
    for writer in writers:
        writer.close()


@pytest.fixture
def make_loader() -> Iterator[Callable[..., kvdump.KVLoader]]:
    """Makes loaders (default: 2 threads) and closes them after the test."""
    loaders: list[kvdump.KVLoader] = []

    def make(store: kvdump.CacheStore, **kwargs: object) -> kvdump.KVLoader:
        kwargs.setdefault("num_threads", 2)
        loader = kvdump.KVLoader(store, **kwargs)  # type: ignore[arg-type]
        loaders.append(loader)
        return loader

    yield make
    for loader in loaders:
        loader.close()


@pytest.fixture(scope="session")
def mooncake_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One fresh Mooncake cluster on 127.0.0.1 for the session (master + a 256 MiB storage
    service), stopped by PID at the end."""
    require_mooncake()
    from kvdump.mooncake_cluster import LocalMooncakeCluster

    with LocalMooncakeCluster(tmp_path_factory.mktemp("mooncake"), storage_bytes=256 << 20) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def mooncake_store(mooncake_cluster: object) -> Iterator[kvdump.CacheStore]:
    """One Mooncake client for the session, contributing no memory (the storage service holds the
    data). A closed client lingers on the master for its TTL, so clients are not churned per test;
    tests keep apart by key prefix."""
    store = kvdump.open_store(mooncake_cluster.url(global_segment_size=0, local_buffer_size=64 << 20))  # type: ignore[attr-defined]
    yield store
    store.close()  # type: ignore[attr-defined]


@pytest.fixture
def store_factory(request: pytest.FixtureRequest, tmp_path: object) -> Callable[[str], kvdump.CacheStore]:
    """Makes a store of a kind from support.STORE_KINDS: fresh, except Mooncake's session client."""

    def make(kind: str) -> kvdump.CacheStore:
        return make_store(kind, tmp_path, lambda: request.getfixturevalue("mooncake_store"))  # type: ignore[arg-type]

    return make

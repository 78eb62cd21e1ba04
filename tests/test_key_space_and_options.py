"""One KeySpace and one WriterOptions, both bound from C++: what every writer, loader and lookup
takes, checked once; the loose key-space arguments as a deprecated spelling; and the loader as an
object of its own."""

from __future__ import annotations

import pickle

import pytest
import torch

import kvdump
from kvdump.writer_options import writer_options

SHAPE = (2, 4, 4, 2, 8)


def test_a_key_space_names_its_keys() -> None:
    space = kvdump.KeySpace("model-a", 1, 2)
    assert (space.namespace, space.tp_rank, space.tp_size) == ("model-a", 1, 2)
    assert space.block_key(5, 3) == "model-a/tp1of2/0000000000000005/L3"
    assert space.commit_key(5) == "model-a/tp1of2/0000000000000005/commit"
    assert space.commit_key(5, 2, 4) == "model-a/tp1of2/0000000000000005/commit/L2-4"
    assert space.block_key(-1, 0) == "model-a/tp1of2/ffffffffffffffff/L0"  # hashes are signed int64


def test_key_spaces_compare_hash_and_pickle_by_value() -> None:
    space = kvdump.KeySpace("model-a", 1, 2)
    assert space == kvdump.KeySpace("model-a", 1, 2)
    assert space != kvdump.KeySpace("model-a", 0, 2)
    assert len({space, kvdump.KeySpace("model-a", 1, 2), kvdump.KeySpace()}) == 2
    assert pickle.loads(pickle.dumps(space)) == space
    assert space.fingerprint != kvdump.KeySpace("model-b", 1, 2).fingerprint
    assert repr(space) == "KeySpace(namespace='model-a', tp_rank=1, tp_size=2)"
    # Anything else compares unequal, as Python values do, instead of raising.
    assert space != None  # noqa: E711
    assert space != "model-a/tp1of2"
    assert None in [space, None]


def test_the_default_key_space_is_the_one_every_api_defaults_to() -> None:
    store = kvdump.MemoryStore(capacity_bytes=1 << 20)
    with kvdump.AsyncWriter(store, num_threads=1) as writer, kvdump.KVLoader(store, num_threads=1) as loader:
        assert writer.key_space == loader.key_space == kvdump.KeySpace() == kvdump.KeySpace("kvdump", 0, 1)


def test_loose_key_space_arguments_are_deprecated_but_still_honoured() -> None:
    store = kvdump.MemoryStore(capacity_bytes=1 << 20)
    with pytest.warns(DeprecationWarning, match="key_space=kvdump.KeySpace"):
        writer = kvdump.AsyncWriter(store, num_threads=1, namespace="old", tp_rank=1, tp_size=2)
    with writer:
        assert writer.key_space == kvdump.KeySpace("old", 1, 2)
    with pytest.warns(DeprecationWarning):
        assert kvdump.lookup(store, [1, 2], namespace="old") == 0


def test_a_key_space_and_loose_arguments_together_are_refused() -> None:
    store = kvdump.MemoryStore(capacity_bytes=1 << 20)
    with pytest.raises(kvdump.KvdumpTypeError, match="key_space or namespace"):
        kvdump.AsyncWriter(store, key_space=kvdump.KeySpace("a"), namespace="b")
    with pytest.raises(kvdump.KvdumpTypeError, match="key_space"):
        kvdump.KVLoader(store, key_space=("a", 0, 1))  # type: ignore[arg-type]


def test_writers_and_loaders_take_the_defaults_of_the_one_options_struct() -> None:
    defaults = kvdump.WriterOptions()
    store = kvdump.MemoryStore(capacity_bytes=1 << 20)
    with kvdump.AsyncWriter(store) as writer, kvdump.KVLoader(store) as loader:
        for stats in (writer.stats(), loader.stats()):
            assert stats["queue_capacity"] == defaults.queue_capacity
            assert stats["staging"]["capacity_bytes"] == defaults.staging_bytes
            assert stats["num_threads"] == kvdump.writer.default_num_threads()
    assert defaults.num_threads is None  # None: the default the engine computes
    assert defaults.staging_device == "auto"


def test_options_name_the_setting_of_the_wrong_type_and_the_rule_broken() -> None:
    options = writer_options(queue_capacity=8, submit_timeout=2)
    assert (options.queue_capacity, options.submit_timeout) == (8, 2.0)
    with pytest.raises(kvdump.KvdumpTypeError, match="queue_capacity"):
        options.queue_capacity = 1.5
    with pytest.raises(kvdump.KvdumpTypeError, match="submit_timeout"):
        options.submit_timeout = "1"
    options.idle_poll = 2.0  # each value alone is a number of seconds ...
    with pytest.raises(kvdump.KvdumpValueError, match="idle_poll"):
        options.validate()  # ... but no engine polls less than once a second
    options.idle_poll = 0.00025
    assert options.idle_poll == pytest.approx(0.00025)  # sub-millisecond polls are kept
    options.validate()


def test_a_loader_runs_apart_from_any_writer() -> None:
    """A loader's session and a writer's cycle on one store are independent objects: a load waits
    on nothing the writer does, and closing the loader leaves the writer's open cycle untouched."""
    store = kvdump.MemoryStore(capacity_bytes=1 << 20)
    kv = torch.randn(SHAPE)
    with kvdump.AsyncWriter(store, num_threads=1) as writer:
        with writer.cycle():
            kvdump.write_cache_store(writer, 0, kv, [0, 1], [10, 11])
        writer.init()  # a cycle left open while the loader works
        loader = kvdump.KVLoader(store, num_threads=1)
        dst = torch.zeros(SHAPE)
        loader.start()
        loader.load_async(0, dst, [2, 3], [10, 11])
        loader.wait_layer(0)
        assert loader.finish().completed == 1
        assert torch.equal(dst[:, 2:4], kv[:, 0:2])
        assert loader.stats()["cycles"] == 1 and writer.stats()["cycles"] == 1
        loader.close()
        assert writer.state == "accepting"
        writer.abort()
    with pytest.raises(kvdump.LifecycleError, match="loader is closed"):
        loader.start()


def test_the_load_ops_take_a_loader_and_the_write_op_a_writer() -> None:
    store = kvdump.MemoryStore(capacity_bytes=1 << 20)
    dst = torch.zeros(SHAPE)
    ids, hashes = torch.tensor([0]), torch.tensor([10])
    with kvdump.AsyncWriter(store, num_threads=1) as writer, kvdump.KVLoader(store, num_threads=1) as loader:
        with pytest.raises(RuntimeError):
            torch.ops.kvdump.load_cache_store(writer.torch_writer, 0, dst, None, ids, hashes)
        writer.init()
        with pytest.raises(RuntimeError):
            torch.ops.kvdump.write_cache_store(loader.torch_loader, 0, dst, None, ids, hashes)
        writer.abort()


def test_the_deprecated_loader_writer_answers_the_calls_made_on_it() -> None:
    store = kvdump.MemoryStore(capacity_bytes=1 << 20)
    kv = torch.randn(SHAPE)
    with kvdump.AsyncWriter(store, num_threads=1) as writer, writer.cycle():
        kvdump.write_cache_store(writer, 0, kv, [0], [10])
    with kvdump.KVLoader(store, key_space=kvdump.KeySpace("kvdump"), num_threads=1) as loader:
        with pytest.warns(DeprecationWarning, match="KVLoader.writer"):
            pool = loader.writer
        assert (pool.namespace, pool.tp_rank, pool.tp_size, pool.store) == ("kvdump", 0, 1, store)
        dst = torch.zeros(SHAPE)
        pool.init()
        assert pool.state == "accepting"
        loader.load_async(0, dst, [3], [10])
        assert pool.wait_all_done().completed == 1
        assert pool.stats()["cycles"] == 1
        assert torch.equal(dst[:, 3], kv[:, 0])


def test_open_loaders_and_writers_are_closed_at_interpreter_exit() -> None:
    from kvdump import closed_at_exit

    store = kvdump.MemoryStore(capacity_bytes=1 << 20)
    loader, writer = kvdump.KVLoader(store, num_threads=1), kvdump.AsyncWriter(store, num_threads=1)
    assert {loader, writer} <= set(closed_at_exit._open)  # what the exit hook closes
    loader.close()
    writer.close()


def test_a_writer_or_loader_setting_that_does_not_exist_is_named() -> None:
    store = kvdump.MemoryStore(capacity_bytes=1 << 20)
    for make in (kvdump.AsyncWriter, kvdump.KVLoader):
        with pytest.raises(kvdump.KvdumpTypeError, match="'num_thread'.*num_threads"):
            make(store, num_thread=2)

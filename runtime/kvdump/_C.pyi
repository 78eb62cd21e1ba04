"""Type stubs for kvdump._C, the private native extension (ops/bindings/*.cc).

Errors cross the boundary as the classes of kvdump.errors: every call below may raise
kvdump.KvdumpValueError for a bad argument and kvdump.LifecycleError on a closed writer or loader.
"""

import os
from collections.abc import Callable
from typing import Any

import torch
from typing_extensions import Buffer

def default_num_threads() -> int:
    """Workers when num_threads is not given: the cores torch's intra-op threads leave free, 1 to 8."""

def default_idle_poll() -> float:
    """Seconds between an idle worker's polls when idle_poll is not given: 0.0005 where torch's intra-op
    threads leave a core free, else 0 (each submit wakes a worker)."""

MAX_TP_SIZE: int
"""The largest TP size a record's header can name."""

def status_codes() -> dict[str, int]:
    """Every status code of the C++ core, name to value (kvdump.errors.StatusCode must match it)."""

def lookup(store: CacheStore, key_space: KeySpace, block_hashes: list[int], layer_begin: int, layer_end: int) -> int:
    """How many leading blocks have a commit record covering [layer_begin, layer_end) ((0, 0): any
    whole-model record); one batched read, every record checked."""

class KeySpace:
    """Where blocks and commit records live: a namespace (the key prefix that keeps deployments
    apart) and a tensor-parallel shard (tp_rank of tp_size). Checked once, when made; immutable."""

    def __init__(self, namespace: str = "kvdump", tp_rank: int = 0, tp_size: int = 1) -> None: ...
    @property
    def namespace(self) -> str: ...
    @property
    def tp_rank(self) -> int: ...
    @property
    def tp_size(self) -> int: ...
    @property
    def fingerprint(self) -> int:
        """The 64-bit fingerprint every record of this key space carries."""
    def block_key(self, block_hash: int, layer: int) -> str:
        """The store key of one layer of one block (docs/design.md section 3)."""
    def commit_key(self, block_hash: int, layer_begin: int = 0, layer_end: int = 0) -> str:
        """The store key of a block's commit record (layers (0, 0): a whole model)."""
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class WriterOptions:
    """The settings of a writer's or a loader's engine, with the library's defaults. Each setter
    checks its value's type; the rules across settings are checked when a writer or loader is built."""

    def __init__(self) -> None: ...
    num_threads: int | None
    queue_capacity: int
    submit_timeout: float
    abort_timeout: float
    max_abandoned_threads: int | None
    worker_nice: int
    idle_poll: float | None
    staging_bytes: int
    staging_timeout: float
    staging_device: str
    def validate(self) -> None:
        """Raises KvdumpValueError naming the setting at fault when no engine can run with these."""

class CacheStore:
    """The interface every kvdump store implements (thread-safe). Calling these methods on the class
    (``kvdump.CacheStore.put(store, ...)``) goes through the C++ interface, as the writer does."""

    @property
    def name(self) -> str: ...
    def put(self, key: str, data: Buffer) -> None:
        """Store bytes under key (overwrites). ``data`` must be C-contiguous; StoreFullError when
        there is no room."""
    def get(self, key: str) -> bytes | None:
        """The bytes under key, or None when absent."""
    def batch_put(self, keys: list[str], values: list[bytes]) -> None:
        """Store many values in one call; raises the first failure."""
    def get_into(self, key: str, buffer: Buffer) -> int:
        """Copy the value into a writable buffer and return its size; KeyNotFoundError when absent,
        KvdumpValueError (TOO_LARGE) when the buffer is too small."""
    def exists(self, key: str) -> bool: ...
    def batch_exists(self, keys: list[str]) -> list[bool]: ...
    def remove(self, key: str) -> bool:
        """Remove key; False when it was absent."""
    def discard(self, keys: list[str]) -> None:
        """Advice from a writer: the blocks under keys will never be committed; an evicting store
        may reclaim them first."""

class PythonStore(CacheStore):
    """Base class of a cache store written in Python. Implement put(key, value: memoryview) ->
    None | bool (False: not stored), get(key) -> bytes | None, exists(key) -> bool, remove(key) ->
    bool; optionally batch_put (None, or per key None | False | Exception), get_into,
    batch_get_into, batch_exists, register_buffer, unregister_buffer. Any other result is an
    INTERNAL error naming the store and the type returned. Called from Python, a subclass's put and
    batch_put raise the first failure their result reports. Lent memoryviews are valid only during
    the call."""

    def __init__(self, name: str) -> None: ...

def write_cache_store(
    writer: object,
    layer: int,
    kv_cache: torch.Tensor,
    block_ids: object,
    block_hashes: object,
    *,
    v_cache: torch.Tensor | None = None,
    request: str = "",
) -> None:
    """kvdump.write_cache_store itself: queues plain arguments in C++, types its errors, and hands
    anything else to the Python path installed by install_write_fallbacks."""

def install_write_fallbacks(
    write: Callable[..., None], error_for_code: Callable[[int, str, str], BaseException]
) -> None:
    """What write_cache_store calls for what it declines, and to make its typed errors; kvdump installs them."""

def direct_tensor_layout_checked() -> bool:
    """Whether write_cache_store reads plain tensors through their object layout, confirmed on this
    torch when the module loaded (else through their _cdata attribute)."""

def direct_writer_handle(ticket: int) -> object:
    """The capsule through which write_cache_store reaches the writer offered under ticket."""

def refuse_python_calls_at_exit(timeout: float) -> int:
    """From now on kvdump's threads make no call into Python; waits up to timeout seconds for those
    inside to leave, and returns how many are still inside."""

def buffer_address(buffer: Buffer) -> int:
    """The address of a buffer's first byte, valid only while the buffer is."""

class MemoryStore(CacheStore):
    """In-process store bounded by capacity_bytes. When full, a put fails with StoreFullError and
    nothing is evicted."""

    def __init__(
        self,
        capacity_bytes: int = 1073741824,
        *,
        eviction: str = "evict",
        high_watermark: float = 0.9,
        low_watermark: float = 0.8,
        slab_bytes: int = 0,
        pin_memory: str = "auto",
    ) -> None: ...
    def stats(self) -> dict[str, int]:
        """capacity_bytes, used_bytes, entries, rejected_full."""

class FileStore(CacheStore):
    """One file per key under root (local or shared filesystem). Writes go to a temporary file and
    are renamed into place, so readers in any process never see a partial value."""

    def __init__(self, root: str | os.PathLike[str], fsync: bool = False) -> None: ...
    @property
    def root(self) -> str: ...
    def remove_orphan_temporaries(self) -> int:
        """Delete temporaries left by dead writers (also done when the store is opened); returns how many."""

class DelayedStore(CacheStore):
    """Wraps a native store and sleeps put_delay seconds per put call (one per batch, after the bytes
    are handed over, as a network store waits for its acknowledgment) and get_delay per get call
    (before the copy): a stand-in for a remote store's round trip in benchmarks and tests."""

    def __init__(self, inner: CacheStore, put_delay: float = 0.0, get_delay: float = 0.0) -> None: ...

class Writer:
    """One WriterContext: a transfer engine (pool, store, staging, key space) and the ledger its
    barrier publishes commit records from. Use it through kvdump.AsyncWriter. Every blocking call
    releases the GIL."""

    def __init__(
        self, store: CacheStore, options: WriterOptions, key_space: KeySpace, layers: tuple[int, int] | None
    ) -> None:
        """``layers=None`` means every layer written in a cycle, from 0."""
    def init(self, full_queue_fails_request: bool = False) -> None: ...
    def submit(
        self,
        fn: Callable[[], object],
        label: str,
        layer: int,
        request: str,
        timeout: float | None,
    ) -> None:
        """``layer=-1`` when not layer-bound; ``timeout=None`` uses the writer's submit_timeout."""
    def wait_all_done(self, timeout: float | None) -> dict[str, int]:
        """submitted, completed, failed, cancelled; raises WriteError / WriteTimeout / AbortedError."""
    def abort(self, timeout: float | None) -> dict[str, Any]:
        """cancelled, finished_running, abandoned, failed (ints), first_failure and first_abandoned
        (str | None)."""
    def cancel_request(self, request: str) -> int: ...
    def close(self, timeout: float | None) -> None: ...
    @property
    def state(self) -> str:
        """One of "idle", "accepting", "draining", "aborting"."""
    def offer_to_torch(self) -> int:
        """A one-shot ticket from which torch.classes.kvdump.Writer takes this writer."""
    @property
    def closed(self) -> bool: ...
    def stats(self) -> dict[str, Any]:
        """Counters (ints), latency summaries (dicts of count, mean_us, p50_us, p99_us, max_us) and
        the staging pool's counters under "staging"."""

class Loader:
    """One LoaderContext: a transfer engine of its own and the per-layer board its queued loads
    report to. Use it through kvdump.KVLoader. Every blocking call releases the GIL."""

    def __init__(self, store: CacheStore, options: WriterOptions, key_space: KeySpace) -> None: ...
    def open(self) -> None:
        """Opens a loading session."""
    def finish(self, timeout: float | None) -> dict[str, int]:
        """Waits for every queued load and closes the session; raises the first failure."""
    def abort(self, timeout: float | None) -> dict[str, Any]:
        """As Writer.abort; waiters get AbortedError."""
    def wait_layer(self, layer: int, timeout: float | None) -> None:
        """Waits for one layer's queued load; raises its error."""
    def close(self, timeout: float | None) -> None: ...
    @property
    def state(self) -> str: ...
    def offer_to_torch(self) -> int:
        """A one-shot ticket from which torch.classes.kvdump.Loader takes this loader."""
    @property
    def closed(self) -> bool: ...
    def stats(self) -> dict[str, Any]:
        """As Writer.stats."""

"""``MooncakeStore``: kvdump's cache store on a Mooncake Store cluster, for PD separation across
machines.

Mooncake ships no C++ headers in its wheel, only a pybind11 module, so this store drives Mooncake's
Python client from a :class:`kvdump.PythonStore`. The writer's worker threads hold the GIL only to
enter and leave the client: Mooncake releases the GIL during its transfers (measured in
``bench/bench_store_bandwidth.py``). Staging buffers are registered with Mooncake when the writer
allocates them, so block puts and gets are zero-copy (``batch_upsert_from`` / ``batch_get_into``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from kvdump import _C
from kvdump.errors import (
    KeyNotFoundError,
    KvdumpError,
    KvdumpValueError,
    LeaseHeldError,
    StatusCode,
    StoreError,
    StoreFullError,
    UnsupportedError,
)
from kvdump.stores.url_options import url_options

# Mooncake's own error codes (mooncake-store ErrorCode) that kvdump gives a meaning to.
SEGMENT_FULL = -200  # no segment has room for the value
INVALID_PARAMS = -600  # e.g. an empty value, a value over local_buffer_size, a read buffer too small
REPLICA_NOT_READY = -703  # a read raced a write of the same key; transient
OBJECT_NOT_FOUND = -704
OBJECT_HAS_LEASE = -706  # a reader's lease protects the object from removal

INSTALL_HINT = "pip install mooncake-transfer-engine-non-cuda && apt-get install -y libibverbs1"


def mooncake_error(code: int, key: str, operation: str) -> KvdumpError:
    """The kvdump error for a negative Mooncake return code."""
    if code == SEGMENT_FULL:
        return StoreFullError(f"Mooncake {operation}: no segment has room (code {code})", key=key)
    if code == OBJECT_NOT_FOUND:
        return KeyNotFoundError(f"Mooncake {operation}: no such key (code {code})", key=key)
    if code == OBJECT_HAS_LEASE:
        return LeaseHeldError(f"Mooncake {operation}: a reader holds a lease on the key (code {code})", key=key)
    if code == INVALID_PARAMS:
        return StoreError(
            f"Mooncake {operation}: invalid parameters (code {code}; e.g. a value larger than local_buffer_size)",
            key=key,
        )
    return StoreError(f"Mooncake {operation} failed with code {code}", key=key)


def buffer_too_small(key: str, needed: int, available: int) -> KvdumpValueError:
    """TOO_LARGE naming the key, worded as the native stores word it (kvdump::bufferTooSmall)."""
    return KvdumpValueError(
        f"value of {needed} bytes does not fit a {available}-byte buffer", code=StatusCode.TOO_LARGE, key=key
    )


class MooncakeStore(_C.PythonStore):
    """A client of a Mooncake Store master (``mooncake_master``).

    ``master`` is the master's RPC address, ``metadata_server`` the transfer engine's metadata
    service (``http://host:port/metadata``, or ``P2PHANDSHAKE``). This client contributes
    ``global_segment_size`` bytes of its own memory to the cluster and uses ``local_buffer_size``
    bytes for copies that are not zero-copy.

    By default a put of a key that exists keeps the stored value (first writer wins): Mooncake's
    ``upsert`` lets a concurrent reader see a replaced value as zeros (seen here under load), and
    kvdump's keys are content hashes, so rewriting one never changes its bytes. ``overwrite=True``
    makes puts replace (``upsert``) for other uses. A read that races a write of the same key is
    retried for up to ``read_retry_seconds``. Mooncake cannot hold empty
    values: putting one raises :class:`UnsupportedError`. Any read (``exists`` included) takes a
    lease that makes ``remove`` raise :class:`LeaseHeldError` until it expires (about 10 s)."""

    def __init__(
        self,
        master: str = "127.0.0.1:50051",
        *,
        metadata_server: str = "http://127.0.0.1:8080/metadata",
        local_hostname: str = "127.0.0.1",
        protocol: str = "tcp",
        device_name: str = "",
        global_segment_size: int = 512 << 20,
        local_buffer_size: int = 128 << 20,
        read_retry_seconds: float = 1.0,
        overwrite: bool = False,
    ) -> None:
        super().__init__(f"mooncake://{master}")
        try:
            from mooncake.store import MooncakeDistributedStore
        except ImportError as exc:
            raise UnsupportedError(f"MooncakeStore needs Mooncake's client: {INSTALL_HINT} ({exc})") from None
        if global_segment_size < 0:
            raise KvdumpValueError(f"global_segment_size must be >= 0, got {global_segment_size}")
        if local_buffer_size <= 0:
            raise KvdumpValueError(f"local_buffer_size must be > 0, got {local_buffer_size}")
        if not 0 <= read_retry_seconds < float("inf"):
            raise KvdumpValueError(f"read_retry_seconds must be a finite number >= 0, got {read_retry_seconds}")
        self.master = master
        self._client: Any = MooncakeDistributedStore()
        code = self._client.setup(
            local_hostname, metadata_server, global_segment_size, local_buffer_size, protocol, device_name, master
        )
        if code != 0:
            raise StoreError(
                f"Mooncake client setup failed with code {code}: is mooncake_master running at {master} "
                f"with its metadata server at {metadata_server}?"
            )
        self.read_retry_seconds = read_retry_seconds
        self.overwrite = overwrite
        self._lock = threading.Lock()
        self._registered: dict[int, int] = {}  # address -> size of buffers registered for zero-copy
        self._closed = False

    # -- zero-copy registration (called by the writer for its staging buffers) ------------------

    def register_buffer(self, address: int, size: int) -> None:
        code = self._client.register_buffer(address, size)
        if code != 0:
            raise mooncake_error(code, "", "register_buffer")
        with self._lock:
            self._registered[address] = size

    def unregister_buffer(self, address: int) -> None:
        with self._lock:
            if self._registered.pop(address, None) is None or self._closed:
                return  # a closed client has forgotten its registrations already
        code = self._client.unregister_buffer(address)
        if code != 0:
            raise mooncake_error(code, "", "unregister_buffer")

    def _registered_address(self, view: memoryview) -> int | None:
        """The address of ``view`` when it lies wholly inside a registered buffer, else None."""
        address = _C.buffer_address(view)
        end = address + view.nbytes
        with self._lock:
            for start, size in self._registered.items():
                if start <= address and end <= start + size:
                    return address
        return None

    # -- the PythonStore interface ---------------------------------------------------------------

    def put(self, key: str, value: memoryview) -> None:
        error = self._put_all([key], [value])[0]
        if error is not None:
            raise error

    def batch_put(self, keys: Sequence[str], values: Sequence[Any]) -> list[KvdumpError | None]:
        return self._put_all(keys, values)

    def _put_all(self, keys: Sequence[str], values: Sequence[Any]) -> list[KvdumpError | None]:
        """One result per key: None when stored, else that key's error."""
        results: list[KvdumpError | None] = [None] * len(keys)
        views = [memoryview(value).cast("B") for value in values]
        try:
            self._put_views(keys, views, results)
        finally:
            for view in views:  # derived from lent memory: must not outlive the call
                view.release()
        return results

    def _put_views(self, keys: Sequence[str], views: list[memoryview], results: list[KvdumpError | None]) -> None:
        direct: list[int] = []  # from registered staging: zero-copy
        copied: list[int] = []  # anything else (e.g. commit records): one copy through the local buffer
        addresses: list[int] = []
        for i, view in enumerate(views):
            if view.nbytes == 0:
                results[i] = UnsupportedError("Mooncake Store cannot hold an empty value", key=keys[i])
                continue
            address = self._registered_address(view)
            if address is None:
                copied.append(i)
            else:
                direct.append(i)
                addresses.append(address)
        if direct:
            put_from = self._client.batch_upsert_from if self.overwrite else self._client.batch_put_from
            codes = put_from([keys[i] for i in direct], addresses, [views[i].nbytes for i in direct])
            for i, code in zip(direct, codes):
                if code != 0:
                    results[i] = mooncake_error(code, keys[i], "put")
        if copied:
            put_batch = self._client.upsert_batch if self.overwrite else self._client.put_batch
            code = put_batch([keys[i] for i in copied], [views[i] for i in copied])
            if code != 0:  # Mooncake answers a copied batch with one code for all of it
                for i in copied:
                    results[i] = mooncake_error(code, keys[i], "put")

    def get(self, key: str) -> bytes | None:
        deadline = time.monotonic() + self.read_retry_seconds
        while True:
            value = self._client.get(key)
            if len(value) > 0:
                return bytes(value)
            # Mooncake answers a missing key with empty bytes; it never stores an empty value.
            size = self._client.get_size(key)
            if size == OBJECT_NOT_FOUND:
                return None
            # Not ready, or ready only after the get: a read racing a write of the key. Retry, sleeping.
            if (size == REPLICA_NOT_READY or size > 0) and time.monotonic() < deadline:
                time.sleep(0.001)
                continue
            if size < 0:
                raise mooncake_error(size, key, "get")
            raise StoreError(
                f"Mooncake get returned no bytes for a {size}-byte value (larger than local_buffer_size?)", key=key
            )

    def get_into(self, key: str, buffer: memoryview) -> int | None:
        result = self.batch_get_into([key], [buffer])[0]
        if isinstance(result, KvdumpError):
            raise result
        return result

    def batch_get_into(self, keys: Sequence[str], buffers: Sequence[memoryview]) -> list[int | None | KvdumpError]:
        results: list[int | None | KvdumpError] = [None] * len(keys)
        direct: list[int] = []
        addresses: list[int] = []
        for i, buffer in enumerate(buffers):
            address = self._registered_address(buffer)
            if address is None:
                results[i] = self._copy_into(keys[i], buffer)
            else:
                direct.append(i)
                addresses.append(address)
        deadline = time.monotonic() + self.read_retry_seconds
        while direct:
            codes = self._client.batch_get_into(
                [keys[i] for i in direct], addresses, [buffers[i].nbytes for i in direct]
            )
            retry = [(i, a) for i, a, code in zip(direct, addresses, codes) if code == REPLICA_NOT_READY]
            for i, code in zip(direct, codes):
                results[i] = code if code >= 0 else self._read_error(code, keys[i], buffers[i].nbytes)
            if not retry or time.monotonic() >= deadline:
                break
            time.sleep(0.001)
            direct, addresses = [i for i, _ in retry], [a for _, a in retry]
        return results

    def _copy_into(self, key: str, buffer: memoryview) -> int | None | KvdumpError:
        value = self.get(key)
        if value is None:
            return None
        if len(value) > buffer.nbytes:
            return buffer_too_small(key, len(value), buffer.nbytes)
        buffer.cast("B")[: len(value)] = value
        return len(value)

    def _read_error(self, code: int, key: str, capacity: int) -> None | KvdumpError:
        if code == OBJECT_NOT_FOUND:
            return None
        if code == INVALID_PARAMS:
            size = self._client.get_size(key)
            if size > capacity:
                return buffer_too_small(key, size, capacity)
        return mooncake_error(code, key, "get")

    def exists(self, key: str) -> bool:
        return self.batch_exists([key])[0]

    def batch_exists(self, keys: Sequence[str]) -> list[bool]:
        out = []
        for key, code in zip(keys, self._client.batch_is_exist(list(keys))):
            if code < 0:
                raise StoreError(f"Mooncake exists failed with code {code}", key=key)
            out.append(code == 1)
        return out

    def remove(self, key: str) -> bool:
        code = self._client.remove(key)
        if code == 0:
            return True
        if code == OBJECT_NOT_FOUND:
            return False
        raise mooncake_error(code, key, "remove")

    def close(self) -> None:
        """Leave the cluster. The segment this client contributed lingers on the master until its
        client TTL passes. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._client.close()


_OPTIONS = {
    "metadata_server": str,
    "local_hostname": str,
    "protocol": str,
    "device_name": str,
    "global_segment_size": int,
    "local_buffer_size": int,
    "read_retry_seconds": float,
    "overwrite": bool,
}


def _master_address(url: str) -> str:
    """The master's ``host:port`` in ``url``, checked here because Mooncake's client does not refuse
    a malformed address: it retries it for about 90 s and then reports a failed setup."""
    parsed = urlparse(url)
    if not parsed.netloc or not parsed.hostname:
        raise KvdumpValueError(f"Mooncake store URL must be mooncake://master-host:port?..., got {url!r}")
    # An IPv6 host is bracketed and holds colons of its own; a port follows the last bracket.
    after_host = parsed.netloc.rpartition("]")[2]
    if ":" in after_host:
        port = after_host.rpartition(":")[2]
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise KvdumpValueError(
                f"Mooncake store URL {url!r}: the master port must be an integer in [1, 65535], got {port!r}"
            )
    return parsed.netloc


def open_mooncake(url: str) -> _C.CacheStore:
    """``mooncake://master-host:port?metadata_server=...&protocol=tcp&...``: a ``MooncakeStore``."""
    master = _master_address(url)
    return MooncakeStore(master, **url_options(urlparse(url).query, _OPTIONS))  # type: ignore[arg-type]

"""Typed exceptions raised by kvdump. The C++ core speaks in status codes; the binding boundary turns
each code into one of these classes, so callers can catch precisely what they can handle."""

from __future__ import annotations

import enum


class StatusCode(enum.IntEnum):
    """Stable error codes shared with the C++ core (``kvdump::StatusCode``); values never change."""

    OK = 0
    INVALID_ARGUMENT = 1
    LIFECYCLE = 2
    TIMEOUT = 3
    CANCELLED = 4
    NOT_FOUND = 5
    STORE_FULL = 6
    IO_ERROR = 7
    CHECKSUM_MISMATCH = 8
    UNSUPPORTED = 9
    TASK_FAILED = 10
    LEASE_HELD = 11
    TOO_LARGE = 12
    INTERNAL = 13
    KEY_SPACE_MISMATCH = 14


class KvdumpError(Exception):
    """Base of every kvdump error. ``code`` is a :class:`StatusCode`; ``key`` names the store key
    concerned, when there is one. Each subclass has its own default code, so a Python store can
    simply ``raise StoreFullError("...", key=key)``."""

    default_code: StatusCode = StatusCode.INTERNAL

    def __init__(self, message: str, *, code: int | None = None, key: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = StatusCode(type(self).default_code if code is None else code)
        self.key = key

    def __str__(self) -> str:
        return f"{self.message} [key={self.key}]" if self.key else self.message


class LifecycleError(KvdumpError, RuntimeError):
    """The writer was used out of order: submit before init, double init, wait without init, ..."""

    default_code = StatusCode.LIFECYCLE


class WriteTimeout(KvdumpError, TimeoutError):
    """A deadline passed: ``wait_all_done(timeout=...)``, or ``submit`` blocked on a full queue."""

    default_code = StatusCode.TIMEOUT


class AbortedError(KvdumpError):
    """The cycle was aborted (by another thread) while this call waited on it."""

    default_code = StatusCode.CANCELLED


class StoreError(KvdumpError):
    """A cache store refused or failed an operation."""

    default_code = StatusCode.IO_ERROR


class StoreFullError(StoreError):
    """The store has no room for the value; nothing was evicted to make it."""

    default_code = StatusCode.STORE_FULL


class KeyNotFoundError(StoreError, KeyError):
    """The key is not in the store."""

    default_code = StatusCode.NOT_FOUND

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return KvdumpError.__str__(self)


class ChecksumError(StoreError):
    """A stored block's bytes do not match its checksum."""

    default_code = StatusCode.CHECKSUM_MISMATCH


class LeaseHeldError(StoreError):
    """The store holds a read lease on the key (Mooncake), so it cannot be removed yet."""

    default_code = StatusCode.LEASE_HELD


class KeySpaceMismatchError(StoreError):
    """A stored record belongs to another key space (namespace or TP layout) than the reader's: it
    was copied or renamed from elsewhere, and is refused rather than loaded as data."""

    default_code = StatusCode.KEY_SPACE_MISMATCH


class KvdumpValueError(KvdumpError, ValueError):
    """An argument is invalid: wrong dtype, rank, device, length or range."""

    default_code = StatusCode.INVALID_ARGUMENT


class KvdumpTypeError(KvdumpValueError, TypeError):
    """An argument has the wrong type (a float layer, an int request, ...); also a ``TypeError``."""


class UnsupportedError(KvdumpError, NotImplementedError):
    """The feature is not built into this kvdump or this store."""

    default_code = StatusCode.UNSUPPORTED


class WriteError(KvdumpError):
    """Raised by ``wait_all_done`` when any task of the cycle failed. Describes the first failure
    (``label``, ``layer``, ``request``, ``key``, ``code``) and counts all of them (``failed``). The
    original Python exception of a failed callable task is chained as ``__cause__``."""

    default_code = StatusCode.TASK_FAILED

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        key: str = "",
        label: str = "",
        layer: int | None = None,
        request: str = "",
        failed: int = 1,
        submitted: int = 0,
        failed_requests: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, code=code, key=key)
        self.label = label
        self.layer = layer
        self.request = request
        self.failed = failed
        self.submitted = submitted
        #: Every request with a failed task in the cycle; none of their blocks was published.
        self.failed_requests = tuple(failed_requests)

    def __str__(self) -> str:
        where = [f"label={self.label!r}"]
        if self.layer is not None:
            where.append(f"layer={self.layer}")
        if self.request:
            where.append(f"request={self.request!r}")
        if self.key:
            where.append(f"key={self.key!r}")
        failed_requests = f"; failed requests: {', '.join(self.failed_requests)}" if self.failed_requests else ""
        return (
            f"{self.failed} of {self.submitted} task(s) failed; first: {self.code.name}: "
            f"{self.message} ({', '.join(where)}){failed_requests}"
        )


# Each class raised for a code is the one whose default code it is; TOO_LARGE (a buffer or a value
# over a limit) is a bad argument too. WriteError is raised by the barrier, never for a bare code.
_BY_CODE: dict[int, type[KvdumpError]] = {
    cls.default_code: cls
    for cls in (
        KvdumpValueError,
        LifecycleError,
        WriteTimeout,
        AbortedError,
        KeyNotFoundError,
        StoreFullError,
        StoreError,
        ChecksumError,
        UnsupportedError,
        LeaseHeldError,
        KeySpaceMismatchError,
    )
}
_BY_CODE[StatusCode.TOO_LARGE] = KvdumpValueError


def error_for_code(code: int, message: str, key: str = "") -> KvdumpError:
    """The exception instance for a status code; the binding layer calls this."""
    cls = _BY_CODE.get(int(code), KvdumpError)
    return cls(message, code=code, key=key)

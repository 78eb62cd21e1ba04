"""The settings of a writer's or a loader's engine, in one bound struct (``kvdump._C.WriterOptions``).

Its defaults are the library's only ones: :class:`kvdump.AsyncWriter`, :class:`kvdump.KVLoader` and
the PD config read them from a fresh ``WriterOptions()``. Each setting's type is checked when it is
set, naming it; the rules across settings are checked when a writer or loader is built."""

from __future__ import annotations

from typing import Any, TypedDict

from kvdump import _C
from kvdump.errors import KvdumpTypeError

WriterOptions = _C.WriterOptions


class EngineSettings(TypedDict, total=False):
    """The keyword arguments :class:`kvdump.AsyncWriter` and :class:`kvdump.KVLoader` take for their
    engine; each left out (or None) keeps the library's default. Seconds are floats."""

    num_threads: int | None  # workers; default: the cores torch's intra-op threads leave free, 1 to 8
    queue_capacity: int | None  # tasks that may wait; submit blocks while the queue is full
    submit_timeout: float | None  # how long a submit may block on a full queue
    staging_bytes: int | None  # host memory blocks may occupy between capture and store
    staging_timeout: float | None  # how long a task may wait for staging memory
    staging_device: str | None  # whose pinned memory stages blocks: 'cuda', 'npu', 'cpu', 'auto'
    abort_timeout: float | None  # how long abort() and close() let running tasks finish
    max_abandoned_threads: int | None  # threads that may be left in abandoned store calls
    worker_nice: int | None  # how far workers lower their priority (0..19; 0 keeps the caller's)
    idle_poll: float | None  # 0: each call wakes a worker; else one idle worker polls that often (default: auto)


def writer_options(**settings: Any) -> WriterOptions:
    """The default options with ``settings`` set; a setting given as None keeps its default. A name
    that is no setting raises :class:`KvdumpTypeError` naming it and the settings there are."""
    options = WriterOptions()
    for name, value in settings.items():
        if name not in EngineSettings.__annotations__:
            known = ", ".join(EngineSettings.__annotations__)
            raise KvdumpTypeError(f"unexpected keyword argument {name!r}; the engine settings are: {known}")
        if value is not None:
            setattr(options, name, value)
    return options

"""The settings of a writer's or a loader's engine, in one bound struct (``kvdump._C.WriterOptions``).

Its defaults are the library's only ones: :class:`kvdump.AsyncWriter`, :class:`kvdump.KVLoader` and
the PD config read them from a fresh ``WriterOptions()``. Each setting's type is checked when it is set, naming it;
the rules across settings are checked when a writer or loader is built."""

from __future__ import annotations

from typing import Any

from kvdump import _C

WriterOptions = _C.WriterOptions


def writer_options(**settings: Any) -> WriterOptions:
    """The default options with ``settings`` set; a setting given as None keeps its default."""
    options = WriterOptions()
    for name, value in settings.items():
        if value is not None:
            setattr(options, name, value)
    return options

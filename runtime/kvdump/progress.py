"""Bars over the long loops of a run (requests, timed rounds), shown only where the command line
asked for them. Library code passes its loops through :func:`steps`, which changes nothing unless
:func:`showing_bars` is active, so a program that imports kvdump never gets output it did not ask
for; the CLI activates it with a ``rich.progress.Progress`` when stderr is a terminal."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol, TypeVar

T = TypeVar("T")


class Bars(Protocol):
    """The part of ``rich.progress.Progress`` that :func:`steps` uses."""

    def track(self, sequence: Sequence[T], *, description: str) -> Iterable[T]: ...


_active: ContextVar[Bars | None] = ContextVar("kvdump_progress_bars", default=None)


def steps(items: Sequence[T], description: str) -> Iterable[T]:
    """``items``, advancing a bar labelled ``description`` per item while bars are shown."""
    bars = _active.get()
    return items if bars is None else bars.track(items, description=description)


@contextmanager
def showing_bars(bars: Bars) -> Iterator[None]:
    """Within the block, :func:`steps` advances a bar of ``bars`` (already started) per item."""
    token = _active.set(bars)
    try:
        yield
    finally:
        _active.reset(token)

"""What the command line writes to stderr while it works: the records of the ``kvdump`` loggers and,
on a terminal, progress bars. On a terminal both go through one rich console, so log lines scroll
above the live bars; anywhere else (a pipe, a CI log) each record is one plain line and no bar is
drawn. Reports are printed to stdout by the commands themselves."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kvdump.progress import showing_bars

QUIET, NORMAL, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG


def _not_a_reported_save_failure(record: logging.LogRecord) -> bool:
    # The prefill role logs each failed save itself, naming the request, code and key, and so does
    # its report; the save policy's record of the same failure would say it a second time.
    return not hasattr(record, "kvdump_failed_requests")


@contextmanager
def cli_console(level: int = NORMAL, stream: TextIO | None = None) -> Iterator[None]:
    """Within the block, the ``kvdump`` loggers' records of ``level`` and above go to ``stream``
    (default: stderr), and :func:`kvdump.progress.steps` draws bars there if it is a terminal.
    Everything is undone on exit, so one process can run several commands."""
    out = stream if stream is not None else sys.stderr
    # The stream itself decides, not the environment (FORCE_COLOR, TTY_COMPATIBLE): a pipe read by
    # another program gets plain lines even where a CI sets those.
    interactive = out.isatty()
    console = Console(file=out, force_terminal=interactive)
    handler: logging.Handler
    if interactive:
        handler = RichHandler(console=console, show_time=False, show_path=False)
        bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
    else:
        handler = logging.StreamHandler(console.file)
        handler.setFormatter(logging.Formatter("%(message)s"))
        bars = None
    handler.addFilter(_not_a_reported_save_failure)
    library = logging.getLogger("kvdump")
    previous_level = library.level
    library.addHandler(handler)
    library.setLevel(level)
    try:
        if bars is None:
            yield
        else:
            with bars, showing_bars(bars):
                yield
    finally:
        library.removeHandler(handler)
        library.setLevel(previous_level)

"""What the command line shows on stderr while it works: the kvdump loggers' records, plain on a
pipe and through rich on a terminal, where the loops marked as steps also draw bars; outside the
command line, steps change nothing and nothing is printed."""

from __future__ import annotations

import io
import logging

from kvdump.cli_console import QUIET, cli_console
from kvdump.progress import steps

log = logging.getLogger("kvdump.test_cli_console")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_steps_are_the_items_themselves_without_a_console() -> None:
    items = [3, 1, 2]
    assert steps(items, "anything") is items


def test_a_pipe_gets_one_plain_line_per_record_and_no_bars() -> None:
    pipe = io.StringIO()
    with cli_console(stream=pipe):
        assert list(steps(["a", "b"], "rounds")) == ["a", "b"]
        log.info("one %s", "line")
        log.debug("not shown at the normal level")
    assert pipe.getvalue() == "one line\n"
    assert logging.getLogger("kvdump").handlers == []


def test_quiet_keeps_warnings_only() -> None:
    pipe = io.StringIO()
    with cli_console(QUIET, stream=pipe):
        log.info("progress")
        log.warning("a failed request")
    assert pipe.getvalue() == "a failed request\n"


def test_a_reported_save_failure_is_left_to_the_role_that_reports_it() -> None:
    pipe = io.StringIO()
    with cli_console(stream=pipe):
        logging.getLogger("kvdump").error("save failed", extra={"kvdump_failed_requests": ("req-1",)})
        logging.getLogger("kvdump").error("another error")
    assert pipe.getvalue() == "another error\n"


def test_a_terminal_gets_the_records_and_a_bar_per_loop() -> None:
    terminal = Terminal()
    with cli_console(stream=terminal):
        assert list(steps([1, 2, 3], "prefill rounds")) == [1, 2, 3]
        log.info("a record")
    shown = terminal.getvalue()
    assert "a record" in shown
    assert "prefill rounds" in shown and "3/3" in shown
    assert steps([1], "after the command") == [1]

"""Turns the errors raised by ``torch.ops.kvdump.*`` back into typed kvdump exceptions.

The ops cannot raise Python classes themselves, so they prefix their message with
``[kvdump:CODE key=...]`` (the key percent-encoded, so a key with spaces or ']' survives); this
module parses that prefix at the Python boundary."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NoReturn, TypeVar
from urllib.parse import unquote

from kvdump.errors import KvdumpError, StatusCode, error_for_code

_PREFIX = re.compile(r"\[kvdump:(?P<code>[A-Z_]+)(?: key=(?P<key>\S+))?\] (?P<message>[^\n]*)")

T = TypeVar("T")


def translate(exc: BaseException) -> KvdumpError | None:
    """The kvdump exception described by a torch op's error, or None if it is not one of ours."""
    match = _PREFIX.search(str(exc))
    if match is None:
        return None
    code = StatusCode[match.group("code")]
    return error_for_code(code, match.group("message"), unquote(match.group("key") or ""))


def raise_typed(exc: BaseException) -> NoReturn:
    """Raises ``exc`` as the typed kvdump exception it describes, or as it is if it is not ours."""
    typed = translate(exc)
    if typed is None:
        raise exc
    raise typed from None


def call_op(op: Callable[..., T], *args: object) -> T:
    """Calls a kvdump torch op, re-raising its errors as typed kvdump exceptions."""
    try:
        return op(*args)
    except (RuntimeError, ValueError) as exc:
        raise_typed(exc)

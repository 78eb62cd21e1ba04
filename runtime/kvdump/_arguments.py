"""Checks of user-facing arguments that raise a typed :class:`KvdumpValueError` naming the argument
and the expected value, before anything reaches C++ (where pybind11 would print overload lists)."""

from __future__ import annotations

import math
import operator
from typing import Any

from kvdump.errors import KvdumpTypeError, KvdumpValueError


def integer(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; bools, floats and strings are refused."""
    if isinstance(value, bool):
        raise KvdumpTypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        result = operator.index(value)
    except TypeError:
        raise KvdumpTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if minimum is not None and result < minimum:
        raise KvdumpValueError(f"{name} must be >= {minimum}, got {result}")
    if maximum is not None and result > maximum:
        raise KvdumpValueError(f"{name} must be <= {maximum}, got {result}")
    return result


def seconds(name: str, value: Any, *, optional: bool = False) -> float | None:
    """A finite, non-negative number of seconds (or None when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KvdumpTypeError(f"{name} must be a number of seconds, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise KvdumpValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def text(name: str, value: Any) -> str:
    """``value`` if it is a str that UTF-8 can carry to the native side (a lone surrogate cannot)."""
    if not isinstance(value, str):
        raise KvdumpTypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise KvdumpValueError(f"{name} must be text UTF-8 can encode: {exc}") from None
    return value


def store(name: str, value: Any) -> Any:
    """``value`` if it is a kvdump store (a ``kvdump.CacheStore``)."""
    from kvdump import _C

    if not isinstance(value, _C.CacheStore):
        raise KvdumpTypeError(
            f"{name} must be a kvdump store (e.g. kvdump.MemoryStore, or kvdump.open_store(url)), "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def tensor(name: str, value: Any, *, optional: bool = False) -> Any:
    """``value`` if it is a dense (strided) torch.Tensor (or None when ``optional``)."""
    import torch

    if value is None and optional:
        return None
    if not isinstance(value, torch.Tensor):
        raise KvdumpTypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    # Refused here, before the dispatcher, which has no kernel for a nested tensor to say why.
    if value.is_nested:
        raise KvdumpValueError(f"{name} must be a dense (strided) tensor, got a nested one")
    if value.layout != torch.strided:
        raise KvdumpValueError(f"{name} must be a dense (strided) tensor, got layout {value.layout}")
    return value


def layer_range(name: str, value: Any) -> tuple[int, int] | None:
    """A (begin, end) pair of layers with 0 <= begin < end, or None."""
    if value is None:
        return None
    if isinstance(value, range):
        if value.step != 1:
            raise KvdumpValueError(f"{name} must be a contiguous range of layers, got {value!r}")
        value = (value.start, value.stop)
    try:
        begin, end = value
    except (TypeError, ValueError):
        raise KvdumpTypeError(f"{name} must be a (begin, end) pair of layers, got {value!r}") from None
    begin = integer(f"{name}[0]", begin, minimum=0)
    end = integer(f"{name}[1]", end, minimum=begin + 1, maximum=2**31 - 1)
    return begin, end


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of the str ``choices``."""
    expected = ", ".join(map(repr, choices))
    if not isinstance(value, str):
        raise KvdumpTypeError(f"{name} must be one of {expected}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise KvdumpValueError(f"{name} must be one of {expected}, got {value!r}")
    return value

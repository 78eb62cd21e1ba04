"""The query-string options of a store URL (``memory://?capacity_bytes=1048576``), checked against
what the store accepts, with errors that name the option."""

from __future__ import annotations

from urllib.parse import parse_qs

from kvdump.errors import KvdumpValueError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def url_options(query: str, allowed: dict[str, type]) -> dict[str, object]:
    """``query`` parsed into keyword arguments: each name must be in ``allowed`` and its value must
    convert to the type given there (``bool`` accepts 1/0, true/false, yes/no, on/off)."""
    out: dict[str, object] = {}
    for name, values in parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
        if name not in allowed:
            raise KvdumpValueError(f"unknown store option {name!r}; expected one of {sorted(allowed)}")
        raw = values[-1]
        kind = allowed[name]
        if kind is bool:
            if raw.lower() not in _TRUE | _FALSE:
                raise KvdumpValueError(f"store option {name!r} must be true or false, got {raw!r}")
            out[name] = raw.lower() in _TRUE
        else:
            try:
                out[name] = kind(raw)
            except ValueError:
                raise KvdumpValueError(f"store option {name!r} must be {kind.__name__}, got {raw!r}") from None
    return out

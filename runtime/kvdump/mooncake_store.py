"""Deprecated: ``MooncakeStore`` moved to :mod:`kvdump.stores.mooncake`; this name will go."""

from __future__ import annotations

import warnings

from kvdump.stores.mooncake import INSTALL_HINT, MooncakeStore, mooncake_error

warnings.warn(
    "kvdump.mooncake_store is deprecated: import from kvdump.stores.mooncake", DeprecationWarning, stacklevel=2
)

__all__ = ["INSTALL_HINT", "MooncakeStore", "mooncake_error"]

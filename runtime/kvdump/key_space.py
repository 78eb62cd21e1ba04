"""The key space: where a deployment's blocks and commit records live in a store.

:class:`KeySpace` is bound from C++ (``kvdump._C.KeySpace``), which checks it once, when it is made,
and derives every block and commit key from it (``block_key``, ``commit_key``). Writers, loaders,
:func:`kvdump.lookup` and the integrations take one. Its namespace is the key prefix that keeps
deployments apart; what keeps models apart within one is the hash salt (:mod:`kvdump.hashing`)."""

from __future__ import annotations

import warnings

from kvdump import _C
from kvdump.errors import KvdumpTypeError

KeySpace = _C.KeySpace


class InKeySpace:
    """The parts of an object's ``key_space`` as its own read-only attributes (writers and loaders)."""

    key_space: KeySpace

    @property
    def namespace(self) -> str:
        return self.key_space.namespace

    @property
    def tp_rank(self) -> int:
        return self.key_space.tp_rank

    @property
    def tp_size(self) -> int:
        return self.key_space.tp_size


def resolve_key_space(
    key_space: KeySpace | None,
    namespace: str | None,
    tp_rank: int | None,
    tp_size: int | None,
    *,
    caller: str,
    stacklevel: int = 3,
) -> KeySpace:
    """``key_space``, or (deprecated) one made from the loose ``namespace``/``tp_rank``/``tp_size``
    arguments ``caller`` still accepts; neither given: the default key space."""
    loose = {"namespace": namespace, "tp_rank": tp_rank, "tp_size": tp_size}
    given = {name: value for name, value in loose.items() if value is not None}
    if key_space is not None:
        if not isinstance(key_space, KeySpace):
            raise KvdumpTypeError(f"key_space must be a kvdump.KeySpace, got {type(key_space).__name__} {key_space!r}")
        if given:
            raise KvdumpTypeError(f"{caller}: give key_space or {', '.join(given)}, not both")
        return key_space
    if not given:
        return KeySpace()
    warnings.warn(
        f"{caller}({', '.join(f'{name}=' for name in given)}) is deprecated: pass "
        f"key_space=kvdump.KeySpace({', '.join(f'{name}=...' for name in given)})",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return KeySpace(**given)

"""Content hash chain over token ids: the block keys that make stored KV findable (docs/design.md §3).

The KV of a block depends on every token before it, not only on its own tokens, so a block's hash
covers its parent's hash plus its own tokens. Two requests that share a prefix therefore compute the
same hashes for the shared blocks (on any worker, in any process — the hash uses no per-process
salt), and the first differing token changes that block's hash and, through the chain, every later
one. That is what lets a decode worker or a later request with the same prefix find the blocks a
prefill worker stored.
"""

from __future__ import annotations

import hashlib
import struct
import warnings
from collections.abc import Sequence

import torch

from kvdump import _arguments
from kvdump.errors import KvdumpTypeError, KvdumpValueError

_PERSON = b"kvdump.block.v1"  # domain separation: these digests mean nothing outside this scheme
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def model_salt(
    model: str, kv_dtype: torch.dtype | str, *, adapter: str | None = None, cache_salt: str | None = None
) -> str:
    """What a hash chain is salted with: everything besides the token ids that a block's KV depends
    on. ``model`` names the weights (an HF repo id or path, or the reference model's
    ``LlamaConfig.name``), ``kv_dtype`` the cache's element type (a torch dtype, or its name
    without ``torch.``: ``"bfloat16"``), ``adapter`` a LoRA adapter, and ``cache_salt`` a tenant's own salt.
    Every integration salts through this function, so one model and one prompt give one chain
    whichever engine computed it. Length prefixes keep the parts unambiguous.

    The salt is not the key space's namespace: that one is the key prefix that separates
    deployments (:class:`kvdump.KeySpace`); the salt separates models within one."""
    _arguments.text("model", model)
    if isinstance(kv_dtype, torch.dtype):
        dtype = str(kv_dtype).removeprefix("torch.")
    else:
        dtype = _arguments.text("kv_dtype", kv_dtype)
    adapter = "" if adapter is None else _arguments.text("adapter", adapter)
    cache_salt = "" if cache_salt is None else _arguments.text("cache_salt", cache_salt)
    parts = [model, dtype, adapter, cache_salt]
    return "|".join(f"{len(part)}:{part}" for part in parts)


def _salt_of(salt: str, namespace: str | None, caller: str) -> str:
    """``salt``, or the deprecated ``namespace=`` spelling of it, checked as text."""
    _arguments.text("salt", salt)
    if namespace is None:
        return salt
    _arguments.text("namespace", namespace)
    if salt:
        raise KvdumpTypeError(f"{caller}: give salt, not both salt and namespace")
    warnings.warn(
        f"{caller}(namespace=) is deprecated: the chain's salt is salt= (see kvdump.hashing.model_salt); "
        "the key namespace is kvdump.KeySpace's",
        DeprecationWarning,
        stacklevel=3,
    )
    return namespace


def block_hash(
    tokens: Sequence[int], parent: int | None = None, salt: str = "", *, namespace: str | None = None
) -> int:
    """Hash of one block: ``blake2b-64(salt, parent, len(tokens), tokens)`` as a signed int64.

    ``parent`` is the previous block's hash (``None`` for the first block of a sequence). The token
    count is hashed so that a partly filled last block never collides with a full block, and the
    salt (:func:`model_salt`) keeps different models' KV apart in a shared store. ``namespace=`` is
    the deprecated name of ``salt``.
    """
    return _chained_hash(tokens, _parent_hash(parent), _salt_of(salt, namespace, "block_hash").encode("utf-8"))


def _parent_hash(parent: int | None) -> int | None:
    """``parent`` checked as a chain's previous hash: None, or an int that fits int64."""
    if parent is None:
        return None
    parent = _arguments.integer("parent", parent)
    if not _INT64_MIN <= parent <= _INT64_MAX:
        raise KvdumpValueError(f"parent hash {parent} does not fit a signed 64-bit hash")
    return parent


def _chained_hash(tokens: Sequence[int], parent: int | None, name: bytes) -> int:
    """:func:`block_hash` of arguments already checked, with the salt already encoded: a chain checks
    its salt and its first parent once, not once per block."""
    digest = hashlib.blake2b(digest_size=8, person=_PERSON)
    # Length prefixes keep the encoding unambiguous, so distinct inputs never hash the same bytes.
    digest.update(struct.pack("<Q", len(name)))
    digest.update(name)
    digest.update(b"\x00" if parent is None else b"\x01" + struct.pack("<q", parent))
    digest.update(struct.pack("<Q", len(tokens)))
    try:
        digest.update(struct.pack(f"<{len(tokens)}q", *tokens))
    except struct.error as error:
        raise KvdumpValueError(f"token ids must be int64 integers: {error}") from error
    return int.from_bytes(digest.digest(), "little", signed=True)


def block_hashes(
    token_ids: Sequence[int],
    block_size: int,
    salt: str = "",
    parent: int | None = None,
    *,
    namespace: str | None = None,
) -> list[int]:
    """Chained hashes of ``token_ids`` cut into blocks of ``block_size`` (the last may be partial).

    Returns one signed int64 per block, ready for an ``int64`` tensor. Pass ``parent`` to continue
    a chain, e.g. to hash tokens appended after full blocks that were hashed earlier; the result then
    equals what hashing the whole sequence at once would give for those blocks. ``namespace=`` is
    the deprecated name of ``salt``.
    """
    name = _salt_of(salt, namespace, "block_hashes").encode("utf-8")
    block_size = _arguments.integer("block_size", block_size, minimum=1)
    parent = _parent_hash(parent)
    hashes: list[int] = []
    for start in range(0, len(token_ids), block_size):
        parent = _chained_hash(token_ids[start : start + block_size], parent, name)
        hashes.append(parent)
    return hashes


def full_block_hashes(token_ids: Sequence[int], block_size: int, salt: str = "") -> list[int]:
    """The chained hashes of the full blocks of ``token_ids`` only: what the PD roles and the demo
    store and look up. A partial last block's hash covers fewer tokens, so it could never match the
    same prefix extended by a later request."""
    block_size = _arguments.integer("block_size", block_size, minimum=1)
    full = len(token_ids) // block_size
    return block_hashes(token_ids[: full * block_size], block_size, salt)


def flatten_blocks(
    chains: Sequence[Sequence[int]], block_tables: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``block_ids`` and ``block_hashes`` int64 tensors that ``write_cache_store`` takes for a
    batch: each prompt's hash chain (from :func:`block_hashes`) beside the leading ids of its block
    table that hold those blocks, concatenated in batch order. A block two prompts share (a common
    prefix hashes the same, so its content is the same) is listed once, from the first prompt that
    holds it: a write takes each block once."""
    if len(chains) != len(block_tables):
        raise KvdumpValueError(f"{len(chains)} hash chains but {len(block_tables)} block tables")
    ids: list[int] = []
    hashes: list[int] = []
    seen: set[int] = set()
    for chain, table in zip(chains, block_tables):
        if len(table) < len(chain):
            raise KvdumpValueError(f"a block table of {len(table)} ids cannot hold {len(chain)} blocks")
        for block_id, block_hash in zip(table, chain):
            if block_hash in seen:
                continue
            seen.add(block_hash)
            ids.append(block_id)
            hashes.append(block_hash)
    return torch.tensor(ids, dtype=torch.int64), torch.tensor(hashes, dtype=torch.int64)

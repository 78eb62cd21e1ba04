"""A paged KV cache: per-layer block pools plus the block-id bookkeeping that serving engines use.

Each layer owns one tensor shaped ``[2, num_blocks, block_size, num_kv_heads, head_dim]`` (K at
index 0, V at index 1). A request's tokens live in the blocks named by its block table: token ``t``
sits in block ``block_table[t // block_size]`` at slot ``t % block_size``. The block ids a request
gets are arbitrary, which is exactly why a dump must gather scattered blocks and a load must scatter
into whatever ids the receiving cache hands out.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence

import torch

KEY_INDEX = 0
VALUE_INDEX = 1


def blocks_needed(num_tokens: int, block_size: int) -> int:
    """Number of blocks that hold ``num_tokens`` tokens (the last block may be partly filled)."""
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    if block_size <= 0:
        raise ValueError(f"block_size must be > 0, got {block_size}")
    return -(-num_tokens // block_size)


class BlockAllocator:
    """Free list of block ids for one :class:`PagedKVCache`.

    ``offset`` rotates and ``shuffle_seed`` permutes the hand-out order, so that two caches serving
    the same request give it different block ids (the situation of a prefill worker and a decode
    worker in disaggregated serving). Not thread-safe: one scheduler owns it.
    """

    def __init__(self, num_blocks: int, *, offset: int = 0, shuffle_seed: int | None = None) -> None:
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be > 0, got {num_blocks}")
        order = list(range(num_blocks))
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(order)
        shift = offset % num_blocks
        order = order[shift:] + order[:shift]
        self.num_blocks = num_blocks
        self._free: deque[int] = deque(order)
        self._in_use: set[int] = set()

    @property
    def num_free(self) -> int:
        """How many blocks can still be allocated."""
        return len(self._free)

    def allocate(self, n: int) -> list[int]:
        """Take ``n`` block ids off the free list; raises ``MemoryError`` if fewer are free."""
        if n < 0:
            raise ValueError(f"cannot allocate a negative number of blocks ({n})")
        if n > len(self._free):
            raise MemoryError(f"need {n} blocks but only {len(self._free)} of {self.num_blocks} are free")
        ids = [self._free.popleft() for _ in range(n)]
        self._in_use.update(ids)
        return ids

    def free(self, ids: Iterable[int]) -> None:
        """Return block ids to the free list; freeing an id that is not allocated is an error."""
        ids = list(ids)
        if len(set(ids)) != len(ids):
            raise ValueError(f"block ids freed twice in one call: {ids}")
        not_in_use = [i for i in ids if i not in self._in_use]
        if not_in_use:
            raise ValueError(f"block ids {not_in_use} are not allocated (double free or foreign id)")
        self._in_use.difference_update(ids)
        self._free.extend(ids)


class PagedKVCache:
    """Per-layer paged K/V storage, ``layers[i]`` shaped ``[2, num_blocks, block_size, kv_heads, head_dim]``.

    Tokens are addressed by *slot*: ``block_id * block_size + offset_in_block``, an index into the
    layer viewed as ``[2, num_blocks * block_size, kv_heads, head_dim]``. The model writes and reads
    through slots so that one vectorised index op replaces a Python loop over tokens.
    """

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        for name, value in (
            ("num_layers", num_layers),
            ("num_blocks", num_blocks),
            ("block_size", block_size),
            ("num_kv_heads", num_kv_heads),
            ("head_dim", head_dim),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.num_layers = num_layers
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = torch.device(device)
        # Zero-filled so that reading a block nobody wrote gives a recognisable, deterministic value.
        self.layers: list[torch.Tensor] = [
            torch.zeros((2, num_blocks, block_size, num_kv_heads, head_dim), dtype=dtype, device=self.device)
            for _ in range(num_layers)
        ]

    @property
    def block_shape(self) -> tuple[int, int, int]:
        """Shape of one block of K (or of V): ``(block_size, num_kv_heads, head_dim)``."""
        return (self.block_size, self.num_kv_heads, self.head_dim)

    @property
    def bytes_per_block(self) -> int:
        """Bytes of one block of one layer, K and V together."""
        return 2 * self.block_size * self.num_kv_heads * self.head_dim * self.layers[0].element_size()

    def _check_block_table(self, block_table: Sequence[int], num_tokens: int) -> None:
        if blocks_needed(num_tokens, self.block_size) > len(block_table):
            raise ValueError(
                f"block table of {len(block_table)} blocks cannot hold {num_tokens} tokens "
                f"(block_size {self.block_size})"
            )
        bad = [b for b in block_table if not 0 <= b < self.num_blocks]
        if bad:
            raise ValueError(f"block ids {bad} are outside [0, {self.num_blocks})")

    def slot_mapping(self, block_table: Sequence[int], positions: torch.Tensor) -> torch.Tensor:
        """Slots of token ``positions`` (any shape, int64) of the sequence that owns ``block_table``."""
        if positions.numel() == 0:
            return positions.to(device=self.device, dtype=torch.long)
        self._check_block_table(block_table, int(positions.max()) + 1)
        table = torch.tensor(block_table, dtype=torch.long, device=self.device)
        positions = positions.to(device=self.device, dtype=torch.long)
        return table[positions // self.block_size] * self.block_size + positions % self.block_size

    def slot_matrix(
        self, block_tables: Sequence[Sequence[int]], lengths: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots of tokens ``0 .. lengths[s]-1`` of every sequence, padded to the longest.

        Returns ``(slots [batch, max_len], valid [batch, max_len])``; padded entries point at slot 0
        and are ``False`` in ``valid`` so attention can mask them out.
        """
        if len(block_tables) != len(lengths):
            raise ValueError(f"{len(block_tables)} block tables for {len(lengths)} lengths")
        for table, length in zip(block_tables, lengths):
            self._check_block_table(table, length)
        max_len = max(lengths, default=0)
        max_blocks = max((len(t) for t in block_tables), default=0)
        padded_tables = torch.zeros((len(block_tables), max(max_blocks, 1)), dtype=torch.long)
        for row, table in enumerate(block_tables):
            padded_tables[row, : len(table)] = torch.tensor(table, dtype=torch.long)
        positions = torch.arange(max_len, dtype=torch.long)
        lengths_t = torch.tensor(list(lengths), dtype=torch.long)
        valid = positions[None, :] < lengths_t[:, None]
        block_index = (positions // self.block_size).clamp(max=padded_tables.shape[1] - 1)
        block_ids = padded_tables[:, block_index]
        slots = torch.where(valid, block_ids * self.block_size + positions % self.block_size, 0)
        return slots.to(self.device), valid.to(self.device)

    def _flat(self, layer: int) -> torch.Tensor:
        return self.layers[layer].view(2, self.num_blocks * self.block_size, self.num_kv_heads, self.head_dim)

    def write(self, layer: int, slots: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store ``key``/``value`` shaped ``[n, kv_heads, head_dim]`` at the ``n`` given slots."""
        flat = self._flat(layer)
        flat[KEY_INDEX, slots] = key.to(self.dtype)
        flat[VALUE_INDEX, slots] = value.to(self.dtype)

    def read(self, layer: int, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather K and V at ``slots`` (any shape); each result is ``[*slots.shape, kv_heads, head_dim]``."""
        flat = self._flat(layer)
        return flat[KEY_INDEX, slots], flat[VALUE_INDEX, slots]


def copy_blocks(src: PagedKVCache, dst: PagedKVCache, src_ids: Sequence[int], dst_ids: Sequence[int]) -> None:
    """Copy blocks ``src_ids`` of every layer of ``src`` into blocks ``dst_ids`` of ``dst``.

    This is the transfer a store performs between a prefill and a decode worker, without the store;
    it serves as the ground truth that a real dump/load round trip must reproduce.
    """
    if len(src_ids) != len(dst_ids):
        raise ValueError(f"{len(src_ids)} source blocks but {len(dst_ids)} destination blocks")
    if src.num_layers != dst.num_layers or src.block_shape != dst.block_shape:
        raise ValueError("caches differ in layer count or block shape")
    src_index = torch.tensor(list(src_ids), dtype=torch.long, device=src.device)
    dst_index = torch.tensor(list(dst_ids), dtype=torch.long, device=dst.device)
    for src_layer, dst_layer in zip(src.layers, dst.layers):
        dst_layer[:, dst_index] = src_layer[:, src_index].to(device=dst.device, dtype=dst.dtype)

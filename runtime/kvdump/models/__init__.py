"""Reference models with a paged KV cache, used to drive and test kvdump without real weights."""

from .llama import (
    LayerHook,
    LlamaConfig,
    ReferenceLlama,
    generate_greedy,
    greedy_continue,
)
from .paged_cache import BlockAllocator, PagedKVCache, blocks_needed, copy_blocks

__all__ = [
    "BlockAllocator",
    "LayerHook",
    "LlamaConfig",
    "PagedKVCache",
    "ReferenceLlama",
    "blocks_needed",
    "copy_blocks",
    "generate_greedy",
    "greedy_continue",
]

"""A small Llama-style decoder that keeps its KV in a :class:`PagedKVCache`.

It exists to drive kvdump end to end without downloading weights: random but deterministic weights
(seeded), real paged prefill/decode, and a per-layer hook at the point where a serving engine would
dump that layer's KV. ``forward_full`` is a deliberately independent, non-paged recompute that tests
use as ground truth for the paged path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .paged_cache import BlockAllocator, PagedKVCache, blocks_needed

LayerHook = Callable[[int, torch.Tensor], None]
"""Called as ``hook(layer_index, cache.layers[layer_index])`` once that layer's KV is in the cache."""


@dataclass(frozen=True)
class LlamaConfig:
    """Shape and initialisation of a :class:`ReferenceLlama`."""

    vocab_size: int = 512
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 512
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_position: int = 2048
    tie_word_embeddings: bool = False
    dtype: torch.dtype = torch.float32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads != 0:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2 != 0:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")

    @property
    def name(self) -> str:
        """Names these weights the way a repo id names a checkpoint: the architecture and the seed,
        so two configs that build the same weights have the same name. Left out: the dtype (the
        cache's element type, which a caller names on its own) and ``max_position``, which bounds
        the positions a forward accepts without changing what any position computes."""
        shape = ",".join(
            f"{f.name}={getattr(self, f.name)}" for f in fields(self) if f.name not in ("dtype", "max_position")
        )
        return f"reference-llama({shape})"

    @classmethod
    def tiny(cls, **overrides: object) -> LlamaConfig:
        """A model small enough for unit tests that run thousands of forwards in seconds."""
        settings: dict[str, object] = dict(
            vocab_size=128,
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            head_dim=16,
            intermediate_size=128,
            max_position=512,
        )
        settings.update(overrides)
        return cls(**settings)  # type: ignore[arg-type]

    @classmethod
    def small(cls, **overrides: object) -> LlamaConfig:
        """The defaults: big enough that per-layer KV blocks are realistic to dump, still CPU-cheap."""
        return cls(**overrides)  # type: ignore[arg-type]


class RMSNorm(nn.Module):
    """Root-mean-square layer norm, computed in float32 so bf16 models stay stable."""

    def __init__(self, size: int, eps: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (the "rotate half" variant that Llama checkpoints use)."""

    def __init__(self, head_dim: int, max_position: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        angles = torch.outer(torch.arange(max_position, dtype=torch.float64), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        self.max_position = max_position
        # Not persistent: derived from the config, so not part of the state dict.
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x [..., tokens, heads, head_dim]`` by ``positions [..., tokens]``."""
        if positions.numel() and int(positions.max()) >= self.max_position:
            raise ValueError(f"position {int(positions.max())} exceeds max_position {self.max_position}")
        cos = self.cos[positions].unsqueeze(-2)
        sin = self.sin[positions].unsqueeze(-2)
        x32 = x.float()
        half = x32.shape[-1] // 2
        rotated = torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
        return (x32 * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    """Grouped-query attention projections; where K/V come from is decided by the caller."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        kw = dict(bias=False, dtype=config.dtype)
        self.q_proj = nn.Linear(config.hidden_size, config.num_heads * config.head_dim, **kw)
        self.k_proj = nn.Linear(config.hidden_size, config.num_kv_heads * config.head_dim, **kw)
        self.v_proj = nn.Linear(config.hidden_size, config.num_kv_heads * config.head_dim, **kw)
        self.o_proj = nn.Linear(config.num_heads * config.head_dim, config.hidden_size, **kw)

    def qkv(
        self, x: torch.Tensor, positions: torch.Tensor, rotary: RotaryEmbedding
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project ``x [..., tokens, hidden]`` into rotated q ``[..., tokens, heads, dim]``, k and v."""
        lead = x.shape[:-1]
        q = self.q_proj(x).view(*lead, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(*lead, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(*lead, self.num_kv_heads, self.head_dim)
        return rotary(q, positions), rotary(k, positions), v


class SwiGLU(nn.Module):
    """The gated MLP of Llama: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        kw = dict(bias=False, dtype=config.dtype)
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, **kw)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, **kw)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm attention block followed by a pre-norm SwiGLU block, both residual."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, config.dtype)
        self.attn = Attention(config)
        self.post_attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, config.dtype)
        self.mlp = SwiGLU(config)


AttendFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""Maps rotated ``q [B, T, H, D]``, ``k``, ``v [B, T, Hkv, D]`` of one layer to ``[B, T, H, D]``."""


def _paged_attention(
    cache: PagedKVCache,
    layer_index: int,
    write_slots: torch.Tensor,
    read_slots: torch.Tensor,
    mask: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
) -> torch.Tensor:
    """Write new ``k``/``v [B, T, Hkv, D]`` at ``write_slots [B*T]``, attend over ``read_slots [B, L]``.

    Attention always reads K/V back from the cache, also in prefill, so that every token sees the
    same stored values (and dtype rounding) that later decode steps and a remote loader will see.
    """
    cache.write(layer_index, write_slots, k.flatten(0, 1), v.flatten(0, 1))
    keys, values = cache.read(layer_index, read_slots)
    return _masked_attention(q, keys, values, mask)


def _masked_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SDPA of ``q [B, T, H, D]`` over ``keys/values [B, L, Hkv, D]``; ``mask [B, T, L]`` True = attend."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        keys.transpose(1, 2),
        values.transpose(1, 2),
        attn_mask=mask.unsqueeze(1),
        enable_gqa=True,
    )
    return out.transpose(1, 2)


class ReferenceLlama(nn.Module):
    """Llama-style decoder-only transformer with paged prefill/decode and a per-layer KV hook."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, dtype=config.dtype)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, config.dtype)
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else nn.Linear(config.hidden_size, config.vocab_size, bias=False, dtype=config.dtype)
        )
        self.rotary = RotaryEmbedding(config.head_dim, config.max_position, config.rope_theta)
        self._init_weights()
        self.eval()
        self.requires_grad_(False)

    @torch.no_grad()
    def _init_weights(self) -> None:
        # Drawn in float32 from one CPU generator in registration order, then cast: the same seed
        # gives the same model on every device and the bf16 model is the rounded fp32 one.
        generator = torch.Generator().manual_seed(self.config.seed)
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                values = 1.0 + 0.1 * torch.randn(param.shape, generator=generator)
            elif param.dim() == 2 and not name.startswith("embed_tokens"):
                values = torch.randn(param.shape, generator=generator) / math.sqrt(param.shape[1])
            else:
                values = torch.randn(param.shape, generator=generator)
            param.copy_(values.to(param.dtype))

    @property
    def device(self) -> torch.device:
        """Device the weights live on."""
        return self.embed_tokens.weight.device

    def new_cache(self, num_blocks: int, block_size: int) -> PagedKVCache:
        """A zeroed paged cache shaped for this model, on its device and in its dtype."""
        return PagedKVCache(
            self.config.num_layers,
            num_blocks,
            block_size,
            self.config.num_kv_heads,
            self.config.head_dim,
            dtype=self.config.dtype,
            device=self.device,
        )

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(hidden)
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(hidden, weight)

    def _attention_block(
        self, layer: DecoderLayer, hidden: torch.Tensor, positions: torch.Tensor, attend: AttendFn
    ) -> torch.Tensor:
        q, k, v = layer.attn.qkv(layer.input_norm(hidden), positions, self.rotary)
        attended = attend(q, k, v)
        return hidden + layer.attn.o_proj(attended.flatten(-2))

    @staticmethod
    def _mlp_block(layer: DecoderLayer, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + layer.mlp(layer.post_attn_norm(hidden))

    def _run_layer(
        self, layer: DecoderLayer, hidden: torch.Tensor, positions: torch.Tensor, attend: AttendFn
    ) -> torch.Tensor:
        return self._mlp_block(layer, self._attention_block(layer, hidden, positions, attend))

    def _token_tensor(self, ids: Sequence[int]) -> torch.Tensor:
        tokens = torch.tensor(list(ids), dtype=torch.long, device=self.device)
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size})")
        return tokens

    @torch.no_grad()
    def forward_full(self, input_ids: Sequence[Sequence[int]] | torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, tokens, vocab]`` for equal-length sequences, recomputed without any cache.

        The attention here is written out by hand (repeat KV heads, softmax, causal mask) instead of
        sharing the paged path's SDPA call, so that it is an independent check of that path.
        """
        ids = input_ids if isinstance(input_ids, torch.Tensor) else torch.tensor([list(s) for s in input_ids])
        ids = ids.to(device=self.device, dtype=torch.long)
        if ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, tokens], got shape {tuple(ids.shape)}")
        num_tokens = ids.shape[1]
        positions = torch.arange(num_tokens, device=self.device).expand(ids.shape[0], -1)
        causal = torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=self.device).tril()
        group = self.config.num_heads // self.config.num_kv_heads
        scale = 1.0 / math.sqrt(self.config.head_dim)

        def dense_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k = k.repeat_interleave(group, dim=2)
            v = v.repeat_interleave(group, dim=2)
            scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale
            probs = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
            return torch.einsum("bhqk,bkhd->bqhd", probs, v.float()).to(q.dtype)

        hidden = self.embed_tokens(ids)
        for layer in self.layers:
            hidden = self._run_layer(layer, hidden, positions, dense_causal)
        return self._logits(hidden)

    @torch.no_grad()
    def prefill(
        self,
        input_ids: Sequence[Sequence[int]],
        cache: PagedKVCache,
        block_tables: Sequence[Sequence[int]],
        layer_hook: LayerHook | None = None,
    ) -> torch.Tensor:
        """Run every prompt from position 0 into ``cache``; returns last-position logits ``[batch, vocab]``.

        The loop is layer-outer, sequence-inner so that once layer ``i``'s attention has written the
        KV of *all* sequences, ``layer_hook(i, cache.layers[i])`` can dump that layer while its MLP
        and the later layers are still being computed — the overlap kvdump exists for. The hook
        runs before the layer's MLP, where vLLM's attention layer calls a KV connector's
        ``save_kv_layer`` and where transformers updates its cache: a layer's KV is final once its
        attention has run.
        """
        if len(input_ids) != len(block_tables):
            raise ValueError(f"{len(input_ids)} prompts but {len(block_tables)} block tables")
        if any(len(ids) == 0 for ids in input_ids):
            raise ValueError("every prompt needs at least one token")
        tokens = [self._token_tensor(ids) for ids in input_ids]
        positions = [torch.arange(len(ids), device=self.device) for ids in input_ids]
        slots = [cache.slot_mapping(table, pos) for table, pos in zip(block_tables, positions)]
        causal = [(pos[None, :] <= pos[:, None]).unsqueeze(0) for pos in positions]
        hidden = [self.embed_tokens(t).unsqueeze(0) for t in tokens]

        for layer_index, layer in enumerate(self.layers):
            for seq in range(len(hidden)):
                attend = partial(_paged_attention, cache, layer_index, slots[seq], slots[seq].unsqueeze(0), causal[seq])
                hidden[seq] = self._attention_block(layer, hidden[seq], positions[seq].unsqueeze(0), attend)
            if layer_hook is not None:
                layer_hook(layer_index, cache.layers[layer_index])
            hidden = [self._mlp_block(layer, h) for h in hidden]

        last_hidden = torch.cat([h[:, -1] for h in hidden], dim=0)
        return self._logits(last_hidden)

    @torch.no_grad()
    def decode(
        self,
        tokens: Sequence[int],
        seq_lens: Sequence[int],
        cache: PagedKVCache,
        block_tables: Sequence[Sequence[int]],
        layer_hook: LayerHook | None = None,
    ) -> torch.Tensor:
        """One step for a batch: ``tokens[s]`` goes to position ``seq_lens[s]``; returns ``[batch, vocab]``.

        ``seq_lens[s]`` counts the tokens of sequence ``s`` already in ``cache``; its block table
        must already cover position ``seq_lens[s]``. The new K/V is written before attention, so
        each query attends over ``seq_lens[s] + 1`` cached tokens, gathered through the block table.
        ``layer_hook`` is called as in :meth:`prefill`: after each layer's attention wrote its new
        K/V, before the layer's MLP.
        """
        batch = len(tokens)
        if not batch == len(seq_lens) == len(block_tables):
            raise ValueError(f"{batch} tokens, {len(seq_lens)} seq_lens, {len(block_tables)} block tables")
        token_ids = self._token_tensor(tokens)
        positions = torch.tensor(list(seq_lens), dtype=torch.long, device=self.device)
        write_slots = torch.cat(
            [cache.slot_mapping(table, positions[s : s + 1]) for s, table in enumerate(block_tables)]
        )
        read_slots, valid = cache.slot_matrix(block_tables, [n + 1 for n in seq_lens])
        mask = valid.unsqueeze(1)  # [B, 1 query, L]

        hidden = self.embed_tokens(token_ids).unsqueeze(1)  # [B, 1, hidden]
        for layer_index, layer in enumerate(self.layers):
            attend = partial(_paged_attention, cache, layer_index, write_slots, read_slots, mask)
            hidden = self._attention_block(layer, hidden, positions.unsqueeze(1), attend)
            if layer_hook is not None:
                layer_hook(layer_index, cache.layers[layer_index])
            hidden = self._mlp_block(layer, hidden)
        return self._logits(hidden[:, 0])


def _extend_block_tables(
    block_tables: list[list[int]],
    num_tokens: Sequence[int],
    block_size: int,
    allocator: BlockAllocator | None,
) -> None:
    for table, n in zip(block_tables, num_tokens):
        missing = blocks_needed(n, block_size) - len(table)
        if missing > 0:
            if allocator is None:
                raise ValueError(f"sequence needs {missing} more blocks but no allocator was given")
            table.extend(allocator.allocate(missing))


def greedy_continue(
    model: ReferenceLlama,
    first_logits: torch.Tensor,
    prompts: Sequence[Sequence[int]],
    cache: PagedKVCache,
    block_tables: list[list[int]],
    max_new_tokens: int,
    allocator: BlockAllocator | None = None,
) -> list[list[int]]:
    """Greedy-decode ``max_new_tokens`` tokens per sequence, starting from the prefill's last logits.

    The first token is the argmax of ``first_logits``; each further token costs one ``decode`` step.
    ``block_tables`` are extended in place from ``allocator`` whenever a sequence crosses into a new
    block, so the caller owns (and frees) every block they list afterwards. The last generated token
    is returned but, as in a serving engine, its K/V is never written.
    """
    if max_new_tokens <= 0:
        return [[] for _ in prompts]
    if first_logits.shape[0] != len(prompts) or len(block_tables) != len(prompts):
        raise ValueError("first_logits, prompts and block_tables must describe the same batch")
    seq_lens = [len(p) for p in prompts]
    next_tokens = first_logits.argmax(dim=-1).tolist()
    generated = [[t] for t in next_tokens]
    for _ in range(max_new_tokens - 1):
        _extend_block_tables(block_tables, [n + 1 for n in seq_lens], cache.block_size, allocator)
        logits = model.decode(next_tokens, seq_lens, cache, block_tables)
        seq_lens = [n + 1 for n in seq_lens]
        next_tokens = logits.argmax(dim=-1).tolist()
        for out, token in zip(generated, next_tokens):
            out.append(token)
    return generated


def generate_greedy(
    model: ReferenceLlama,
    prompts: Sequence[Sequence[int]],
    cache: PagedKVCache,
    allocator: BlockAllocator,
    max_new_tokens: int,
) -> list[list[int]]:
    """Prefill and greedy-decode in one cache, allocating blocks from ``allocator`` and freeing them after."""
    block_tables: list[list[int]] = []
    try:
        for prompt in prompts:
            block_tables.append(allocator.allocate(blocks_needed(len(prompt), cache.block_size)))
        first_logits = model.prefill(prompts, cache, block_tables)
        return greedy_continue(model, first_logits, prompts, cache, block_tables, max_new_tokens, allocator)
    finally:
        for table in block_tables:
            allocator.free(table)

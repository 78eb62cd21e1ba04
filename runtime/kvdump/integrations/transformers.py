"""Hugging Face ``transformers`` integration: a causal LM's prefill stores every layer's KV through
kvdump, and a decode worker continues generation from the KV it loads back.

Prefill side: :class:`KvdumpCache` is a ``DynamicCache`` that hands each layer's full prompt blocks to
:func:`kvdump.write_cache_store` right after the model puts them in the cache, while later layers are
still being computed; :func:`prefill_to_store` runs that forward inside one writer cycle, so commit
records are published only once every layer is stored. Decode side: :func:`load_into_cache` finds the
committed prefix with :func:`kvdump.lookup`, loads it and returns a ``DynamicCache`` that
``model.generate(input_ids, past_key_values=...)`` continues from.

Block keys use the same hash chain as the rest of kvdump (``kvdump.hashing.block_hashes`` over the
prompt's token ids), salted by :func:`model_salt_of` with the checkpoint's name and dtype, exactly as
the vLLM connector salts the same checkpoint: a vLLM worker and this integration find each other's
blocks when they share a key space.

One prompt per call (batch size 1). Importing this module imports ``transformers``; ``import kvdump``
never does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from kvdump import _C
from kvdump.cache_ops import write_cache_store
from kvdump.commit import lookup
from kvdump.errors import KvdumpError, KvdumpValueError, UnsupportedError
from kvdump.hashing import full_block_hashes, model_salt
from kvdump.loader import KVLoader
from kvdump.save_policy import run_in_cycle, save_error_policy
from kvdump.writer import AsyncWriter

try:
    from transformers.cache_utils import DynamicCache, DynamicLayer
except ImportError as error:  # transformers missing, or older than the per-layer Cache API
    raise ImportError(
        "kvdump.integrations.transformers needs transformers with the per-layer Cache API "
        "(transformers.cache_utils.DynamicLayer, transformers >= 4.56): pip install -U transformers"
    ) from error

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = ["KvdumpCache", "LoadedPrefix", "PrefillResult", "load_into_cache", "model_salt_of", "prefill_to_store"]

TokenIds = torch.Tensor | Sequence[int] | Sequence[Sequence[int]]
"""One prompt: a 1-D tensor or list of ints, or HF's ``[1, tokens]`` batch of one."""


def prompt_token_ids(input_ids: TokenIds) -> list[int]:
    """The prompt's token ids as host ints, for the hash chain. Refuses a batch of several prompts.

    A device tensor is read back once here, before the forward queues any kernel, so the read costs
    no overlap; pass ids from the tokenizer (host memory) to avoid even that."""
    ids = input_ids if isinstance(input_ids, torch.Tensor) else torch.as_tensor(input_ids)
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise KvdumpValueError(f"input_ids must hold integer token ids, got dtype {ids.dtype}")
    if ids.dim() == 2:
        if ids.shape[0] != 1:
            raise KvdumpValueError(
                f"kvdump's transformers integration takes one prompt per call (batch size 1), got input_ids "
                f"of shape {tuple(ids.shape)}; call it once per request"
            )
        ids = ids[0]
    elif ids.dim() != 1:
        raise KvdumpValueError(f"input_ids must be [tokens] or [1, tokens], got shape {tuple(ids.shape)}")
    if ids.numel() == 0:
        raise KvdumpValueError("the prompt is empty: there is no KV to store or load")
    return [int(t) for t in ids.tolist()]


def model_salt_of(model: PreTrainedModel) -> str:
    """The hash salt of ``model``'s KV (:func:`kvdump.hashing.model_salt`): the checkpoint's name or
    path (what ``from_pretrained`` was given) and the model's dtype."""
    return model_salt(model.config.name_or_path or model.config.model_type, model.dtype)


def as_blocks(states: torch.Tensor, num_blocks: int, block_size: int) -> torch.Tensor:
    """HF's ``[1, kv_heads, tokens, head_dim]`` seen as kvdump's ``[num_blocks, block_size, kv_heads,
    head_dim]``: a strided view of the first ``num_blocks * block_size`` tokens, not a copy.

    kvdump's ops need only ``head_dim`` innermost and contiguous, which HF's layout already is, so
    neither side copies K/V on the main thread; the gather (or scatter) happens on a kvdump worker."""
    return states[0, :, : num_blocks * block_size].unflatten(1, (num_blocks, block_size)).permute(1, 2, 0, 3)


def _require_full_attention(index: int, layer: object) -> None:
    # Sliding-window, linear-attention and shared-KV layers do not keep every prompt token's K/V in
    # the [batch, heads, tokens, head_dim] form a block is cut from; storing them would need their own
    # record format, so they are refused rather than stored wrongly.
    if type(layer) is not DynamicLayer:
        raise UnsupportedError(
            f"layer {index} keeps a {type(layer).__name__}; kvdump's transformers integration supports "
            f"only full-attention layers (DynamicLayer)"
        )


class KvdumpCache(DynamicCache):
    """A ``DynamicCache`` that stores the prompt's KV through kvdump as the prefill computes it.

    The first ``update`` of each layer carries the whole prompt; right after it, the layer's full
    blocks (``len(prompt) // block_size`` of them) are queued with :func:`kvdump.write_cache_store`
    under the prompt's block hash chain. A partial last block is not stored: its KV is not a whole
    block's, and it would hash differently once tokens are appended. Later updates (decode steps) are
    not stored. The writer must be accepting during the prefill forward (inside ``writer.cycle()``, as
    :func:`prefill_to_store` does); its barrier publishes the commit records.

    The tensors handed to the writer are the cache's own prompt K/V. ``DynamicLayer`` grows by
    concatenating into new tensors and never writes into old ones, so they stay intact until the
    barrier even if decoding continues from this cache.
    """

    def __init__(
        self,
        writer: AsyncWriter,
        prompt: TokenIds,
        block_size: int,
        *,
        config: PretrainedConfig | None = None,
        salt: str = "",
        request: str = "",
    ) -> None:
        super().__init__(config=config)
        if not isinstance(writer, AsyncWriter):
            raise TypeError(f"writer must be a kvdump.AsyncWriter, got {type(writer).__name__}")
        if block_size <= 0:
            raise KvdumpValueError(f"block_size must be > 0, got {block_size}")
        for index, layer in enumerate(self.layers):  # known now only when a config was given
            _require_full_attention(index, layer)
        tokens = prompt_token_ids(prompt)
        num_blocks = len(tokens) // block_size
        self.writer = writer
        self.request = request
        self.block_size = block_size
        self.prompt_length = len(tokens)
        self.block_hashes: list[int] = full_block_hashes(tokens, block_size, salt)
        # Built once per prompt, not per layer: each layer's call only passes references to these.
        self._block_ids = torch.arange(num_blocks, dtype=torch.int64)
        self._hashes = torch.tensor(self.block_hashes, dtype=torch.int64)
        self._stored_layers: set[int] = set()

    @property
    def num_blocks(self) -> int:
        """How many full prompt blocks each layer stores."""
        return len(self.block_hashes)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        if layer_idx not in self._stored_layers:
            self._stored_layers.add(layer_idx)
            self._store_prompt_blocks(layer_idx, keys, values)
        return keys, values

    def _store_prompt_blocks(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        _require_full_attention(layer_idx, self.layers[layer_idx])
        if keys.shape[0] != 1:
            raise KvdumpValueError(f"KvdumpCache holds one prompt (batch size 1), got K/V of batch {keys.shape[0]}")
        if keys.shape[-2] != self.prompt_length:
            raise KvdumpValueError(
                f"layer {layer_idx} first received {keys.shape[-2]} tokens but the prompt has "
                f"{self.prompt_length}: the first forward through a KvdumpCache must be the whole prompt"
            )
        if self.num_blocks == 0:
            return
        write_cache_store(
            self.writer,
            layer_idx,
            as_blocks(keys, self.num_blocks, self.block_size),
            self._block_ids,
            self._hashes,
            v_cache=as_blocks(values, self.num_blocks, self.block_size),
            request=self.request,
        )


class PrefillResult(NamedTuple):
    """What :func:`prefill_to_store` did."""

    outputs: Any
    """The model's output; ``outputs.logits[:, -1]`` gives the first generated token and
    ``outputs.past_key_values`` is the :class:`KvdumpCache`, which a local decode may continue from."""
    block_hashes: list[int]
    """The hash chain of the stored (full) blocks, in prompt order; empty for a prompt shorter than
    one block."""
    save_error: KvdumpError | None = None
    """With ``on_save_error="report"``: the save's error when it failed (none of the blocks was
    committed then); None when they all were."""

    @property
    def num_blocks(self) -> int:
        return len(self.block_hashes)


def prefill_to_store(
    model: PreTrainedModel,
    input_ids: TokenIds,
    writer: AsyncWriter,
    block_size: int,
    *,
    request: str = "",
    timeout: float | None = None,
    on_save_error: str = "raise",
    **model_kwargs: Any,
) -> PrefillResult:
    """Run the prompt's forward through ``model`` and store every layer's full blocks in
    ``writer.store``, published (committed) only when all of them are stored.

    The forward runs inside one writer cycle: each layer's write is queued as the layer finishes, and
    the barrier after the forward waits (up to ``timeout``) for what could not be hidden. When a
    block fails to store, ``on_save_error="raise"`` (the default) raises :class:`kvdump.WriteError`
    (:class:`kvdump.WriteTimeout` past the deadline); ``"report"`` returns the outputs with the error
    in ``PrefillResult.save_error``, counts it in ``writer.stats()`` and logs it on the ``"kvdump"``
    logger, as :func:`kvdump.wrap_model` does. If the forward raises, the writer aborts and the
    exception propagates under either policy. Either way nothing of a failed prefill is committed
    and the writer ends idle. ``model_kwargs`` go to the forward (for example ``logits_to_keep=1``)."""
    policy = save_error_policy(on_save_error)
    tokens = prompt_token_ids(input_ids)
    cache = KvdumpCache(writer, tokens, block_size, config=model.config, salt=model_salt_of(model), request=request)
    ids = torch.tensor([tokens], dtype=torch.long).to(model.device)

    def forward() -> Any:
        return model(input_ids=ids, past_key_values=cache, use_cache=True, **model_kwargs)

    with torch.no_grad():
        outcome = run_in_cycle(writer, forward, timeout=timeout, on_save_error=policy)
    return PrefillResult(outcome.result, list(cache.block_hashes), outcome.save_error)


class LoadedPrefix(NamedTuple):
    """What :func:`load_into_cache` loaded."""

    cache: DynamicCache
    """Holds the K/V of the first ``num_tokens`` prompt tokens of every layer."""
    num_tokens: int
    """Prompt tokens whose KV was loaded; ``generate`` computes the rest of the prompt."""
    num_blocks: int
    """Stored blocks read from the store."""


def _kv_shape(config: PretrainedConfig) -> tuple[int, int, int]:
    text = config.get_text_config(decoder=True)
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return text.num_hidden_layers, kv_heads, head_dim


def load_into_cache(
    model: PreTrainedModel,
    input_ids: TokenIds,
    source: _C.CacheStore | KVLoader,
    block_size: int,
    *,
    timeout: float | None = None,
) -> LoadedPrefix:
    """Load the committed leading blocks of the prompt's KV into a new ``DynamicCache`` for ``model``.

    ``source`` is a store (read in the default ``kvdump.KeySpace()``) or a :class:`kvdump.KVLoader`
    built with the prefill writer's key space. The prefix is
    the blocks that :func:`kvdump.lookup` reports committed for all of the model's layers, at most
    ``len(prompt) - 1`` tokens of them: the model must still compute the last prompt token to get the
    logits of the first new one. Continue with ``model.generate(input_ids,
    past_key_values=loaded.cache, ...)``, which computes only the tokens after ``loaded.num_tokens``.

    The model must have the dtype the prefill stored; a record that does not match the cache's dtype
    or shape, or fails its checksum, raises a kvdump error naming its key."""
    if block_size <= 0:
        raise KvdumpValueError(f"block_size must be > 0, got {block_size}")
    tokens = prompt_token_ids(input_ids)
    num_layers, kv_heads, head_dim = _kv_shape(model.config)
    cache = DynamicCache(config=model.config)
    for index, layer in enumerate(cache.layers):
        _require_full_attention(index, layer)

    loader = source if isinstance(source, KVLoader) else KVLoader(source, num_threads=min(num_layers, 4))
    try:
        hashes = full_block_hashes(tokens, block_size, model_salt_of(model))
        committed = lookup(loader.store, hashes, key_space=loader.key_space, num_layers=num_layers)
        num_tokens = min(committed * block_size, len(tokens) - 1)
        num_blocks = -(-num_tokens // block_size)
        if num_blocks == 0:
            return LoadedPrefix(cache, 0, 0)
        keys, values = _load_blocks(
            loader, hashes[:num_blocks], block_size, (num_layers, kv_heads, head_dim), model, timeout
        )
    finally:
        if loader is not source:
            loader.close()
    for layer in range(num_layers):
        # DynamicLayer copies on its first update (a concatenation); that one device-side copy is the
        # price of handing back a cache that is HF's own class rather than a look-alike.
        cache.update(keys[layer][:, :, :num_tokens], values[layer][:, :, :num_tokens], layer)
    return LoadedPrefix(cache, num_tokens, num_blocks)


def _load_blocks(
    loader: KVLoader,
    hashes: list[int],
    block_size: int,
    shape: tuple[int, int, int],
    model: PreTrainedModel,
    timeout: float | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Read ``hashes`` for every layer into new ``[1, kv_heads, tokens, head_dim]`` tensors, scattered
    straight into HF's layout through :func:`as_blocks` views."""
    num_layers, kv_heads, head_dim = shape
    num_blocks = len(hashes)
    tokens = num_blocks * block_size

    def per_layer_states() -> list[torch.Tensor]:
        state_shape = (1, kv_heads, tokens, head_dim)
        return [torch.empty(state_shape, dtype=model.dtype, device=model.device) for _ in range(num_layers)]

    keys, values = per_layer_states(), per_layer_states()
    block_ids = torch.arange(num_blocks, dtype=torch.int64)
    hashes_t = torch.tensor(hashes, dtype=torch.int64)
    # One deadline for the whole load, its waits and its abort alike.
    deadline = None if timeout is None else time.monotonic() + timeout

    def remaining() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    loader.start()
    try:
        for layer in range(num_layers):
            loader.load_async(
                layer,
                as_blocks(keys[layer], num_blocks, block_size),
                block_ids,
                hashes_t,
                v_cache=as_blocks(values[layer], num_blocks, block_size),
            )
        # Waiting layer by layer raises the first failing layer's own typed error (KeyNotFoundError,
        # ChecksumError, ...) rather than the session's summary.
        for layer in range(num_layers):
            loader.wait_layer(layer, remaining())
        loader.finish(remaining())
    except BaseException:
        loader.abort(remaining())
        raise
    return keys, values

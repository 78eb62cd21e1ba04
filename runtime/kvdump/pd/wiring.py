"""What both roles build from the config before any work: the store (and the check that it outlives
the process), the model, the writer and the loader."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from kvdump.config import ConfigError, ModelConfig, PDConfig
from kvdump.errors import KvdumpValueError, UnsupportedError
from kvdump.hashing import model_salt
from kvdump.key_space import KeySpace
from kvdump.loader import KVLoader
from kvdump.model_dtypes import torch_dtype
from kvdump.models import LlamaConfig, ReferenceLlama
from kvdump.pd.requests import Request, RequestError
from kvdump.stores import open_store as open_store_url
from kvdump.stores import outlives_process
from kvdump.writer import AsyncWriter


def require_shared_store(config: PDConfig, role: str) -> None:
    """Raise :class:`ConfigError` on ``store.url`` unless the store's data outlives this process:
    what prefill stores in an in-process store vanishes when it exits, and decode, in a process of
    its own, can never find anything in one."""
    url = config.store.resolved_url
    try:
        shared = outlives_process(url)
    except (KvdumpValueError, UnsupportedError) as error:
        raise ConfigError(config.path, "store.url", str(error)) from error
    if shared:
        return
    consequence = (
        "what prefill stores there vanishes when it exits"
        if role == "prefill"
        else "decode can never find there what another process stored"
    )
    raise ConfigError(
        config.path,
        "store.url",
        f"expected a store that outlives this process, got {config.store.url!r}, whose data lives only "
        f"inside the process that opens it, so {consequence}; use file:///path or mooncake://host:port",
    )


def _refused_key(config: PDConfig, refusal: str) -> str:
    """The dotted key a store's refusal of ``store.resolved_url`` is about: ``store.options.<name>``
    when the refusal names an option that ``store.options`` set, else ``store.url``. Stores name the
    option they refuse (:func:`kvdump.open_store`); an option of the table replaced any same-named
    parameter of the URL, so the table's value is the one refused."""
    # A refusal may quote the whole URL, whose query holds every option's name.
    words = refusal.replace(config.store.resolved_url, "")
    named: list[tuple[int, str]] = []
    for name in config.store.options:
        found = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", words)
        if found:
            named.append((found.start(), name))
    return f"store.options.{min(named)[1]}" if named else "store.url"


def open_store(config: PDConfig) -> Any:
    """Open ``store.url`` (with ``store.options``). A URL :func:`kvdump.open_store` refuses (unknown
    scheme, bad option) raises :class:`ConfigError` naming ``store.url``, or ``store.options.<name>``
    for a bad option of that table."""
    try:
        return open_store_url(config.store.resolved_url)
    except (KvdumpValueError, UnsupportedError) as error:
        raise ConfigError(config.path, _refused_key(config, str(error)), str(error)) from error


def writer_kwargs(config: PDConfig) -> dict[str, Any]:
    """Keyword arguments of :class:`kvdump.AsyncWriter` or :class:`kvdump.KVLoader` for this worker:
    ``[writer]`` and its key space."""
    return {**config.writer.model_dump(), "key_space": key_space(config)}


def key_space(config: PDConfig) -> KeySpace:
    """This worker's key space: ``[model]``'s namespace and ``[parallel]``'s TP shard."""
    return KeySpace(config.model.namespace, config.parallel.tp_rank, config.parallel.tp_size)


def make_writer(config: PDConfig, store: Any | None = None) -> AsyncWriter:
    """An :class:`kvdump.AsyncWriter` on ``store`` (default: a freshly opened one)."""
    return AsyncWriter(open_store(config) if store is None else store, **writer_kwargs(config))


def make_loader(config: PDConfig, store: Any | None = None) -> KVLoader:
    """A :class:`kvdump.KVLoader` reading this worker's key space from ``store`` (default: a freshly
    opened one), with every ``[writer]`` setting."""
    return KVLoader(open_store(config) if store is None else store, **writer_kwargs(config))


def llama_config(model: ModelConfig) -> LlamaConfig:
    """The :class:`kvdump.models.LlamaConfig` of ``[model]``'s preset, seed and dtype."""
    preset = LlamaConfig.tiny if model.preset == "tiny" else LlamaConfig.small
    return preset(seed=model.seed, dtype=torch_dtype(model.dtype))


def hash_salt(config: PDConfig) -> str:
    """What block hashes are salted with (:func:`kvdump.hashing.model_salt`): the model's weights
    and dtype, so two configs that share a namespace but not the weights never read each other's
    blocks as hits, and any run of the same model (``kvdump demo`` included) shares them."""
    return model_salt(llama_config(config.model).name, config.model.dtype)


def build_model(config: PDConfig) -> ReferenceLlama:
    """The reference model of ``[model]``: the same weights in every process with the same config."""
    return ReferenceLlama(llama_config(config.model))


def check_fits(config: PDConfig, requests: Sequence[Request], new_tokens: int) -> None:
    if not requests:
        raise RequestError("no prompts: give --prompt TEXT and/or --random-prompts N")
    limit = llama_config(config.model).max_position
    for request in requests:
        if len(request.tokens) + new_tokens > limit:
            raise RequestError(
                f"{request.name}: {len(request.tokens)} prompt tokens + {new_tokens} new tokens exceed "
                f"the {limit} positions of model preset {config.model.preset!r}"
            )


def model_summary(config: PDConfig, model: ReferenceLlama) -> dict[str, Any]:
    return {
        "preset": config.model.preset,
        "seed": config.model.seed,
        "dtype": config.model.dtype,
        "layers": model.config.num_layers,
        "kv_heads": model.config.num_kv_heads,
        "head_dim": model.config.head_dim,
        "block_size": config.cache.block_size,
    }


def where_written(config: PDConfig, store: object, model: ReferenceLlama) -> dict[str, Any]:
    """The report fields both roles share: which store, key space and model."""
    return {
        "store": store.name,  # type: ignore[attr-defined]
        "namespace": config.model.namespace,
        "tp_rank": config.parallel.tp_rank,
        "tp_size": config.parallel.tp_size,
        "model": model_summary(config, model),
    }

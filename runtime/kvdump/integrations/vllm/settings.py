"""The connector's ``kv_connector_extra_config``: the same vocabulary as the PD config file (store
URL and options, writer settings, namespace, deadlines), checked when the connector is built, so a
typo fails vLLM's start-up with the key named instead of surfacing mid-request."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kvdump.config import (
    _NAMESPACE,
    _REJECT,
    _SECONDS,
    _STORE_OPTIONS,
    _STORE_URL,
    MAX_TP_SIZE,
    ConfigError,
    StoreConfig,
    WriterConfig,
    _build_section,
    _choice,
    _integer,
    _integer_in,
    _key,
    _Rule,
)

# Where vLLM users write these keys; ConfigError names it instead of a file.
SOURCE = "--kv-transfer-config"
SECTION = "kv_connector_extra_config"

LAYOUTS = ("auto", "flash_attn", "flash_infer", "mla")

_NAME = _Rule("a non-empty string", lambda v: v if isinstance(v, str) and v else _REJECT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectorSettings(WriterConfig):
    """The checked extra config of :class:`kvdump.integrations.vllm.KvdumpConnector`: the PD config's
    ``[writer]`` keys (inherited, with their rules and defaults) and the connector's own.

    ``namespace`` defaults to one derived from the served model, so two models never share keys;
    prefill and decode instances of one model derive the same one. ``tp_rank``/``tp_size`` override
    what vLLM's parallel state says (for a worker run outside vLLM's distributed runtime).
    ``model_name`` names the checkpoint in the hash salt (:func:`kvdump.hashing.model_salt`); by
    default it is vLLM's model (the repo id or path it loaded), which is what kvdump's transformers
    integration uses too. Set it when deployments load one checkpoint from different paths."""

    store_url: str = _key(_STORE_URL)
    store_options: Mapping[str, str | int | float | bool] = _key(_STORE_OPTIONS, {})
    namespace: str | None = _key(_NAMESPACE, None)
    model_name: str | None = _key(_NAME, None)
    worker_nice: int = _key(_integer_in(0, 19), 0)
    save_timeout: float = _key(_SECONDS, 60.0)
    load_timeout: float = _key(_SECONDS, 60.0)
    lookup_timeout: float = _key(_SECONDS, 5.0)
    kv_layout: str = _key(_choice(*LAYOUTS), "auto")
    tp_rank: int | None = _key(_integer(0), None)
    tp_size: int | None = _key(_integer_in(1, MAX_TP_SIZE), None)

    @property
    def resolved_store_url(self) -> str:
        """``store_url`` with ``store_options`` merged into its query string."""
        return StoreConfig(url=self.store_url, options=self.store_options).resolved_url

    def writer_kwargs(self) -> dict[str, Any]:
        """The :class:`kvdump.AsyncWriter` keyword arguments these settings fix (not the key space)."""
        return {**self.pool_kwargs(), "worker_nice": self.worker_nice}


def parse_settings(extra: Mapping[str, Any] | None) -> ConnectorSettings:
    """Check ``extra`` (vLLM's ``kv_connector_extra_config``). Raises :class:`kvdump.config.ConfigError`
    naming the key at fault."""
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping):
        raise ConfigError(SOURCE, SECTION, f"expected a JSON object, got {type(extra).__name__}")
    settings = _build_section(ConnectorSettings, extra, SECTION, SOURCE, set())
    if settings.tp_rank is not None and settings.tp_size is not None and settings.tp_rank >= settings.tp_size:
        raise ConfigError(
            SOURCE, f"{SECTION}.tp_rank", f"expected an integer in [0, {settings.tp_size}), got {settings.tp_rank}"
        )
    return settings

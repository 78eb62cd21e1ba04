"""The connector's ``kv_connector_extra_config``: the same vocabulary as the PD config file (store
URL and options, writer settings, namespace, deadlines), checked when the connector is built, so a
typo fails vLLM's start-up with the key named instead of surfacing mid-request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, StrictStr, ValidationError, field_validator

from kvdump.config import (
    ConfigError,
    Expected,
    Namespace,
    Seconds,
    StoreOptions,
    StoreUrl,
    TpRank,
    TpSize,
    WriterConfig,
    config_error,
    integer,
    no_options,
    one_of,
    tp_rank_below_tp_size,
    url_with_options,
)

# Where vLLM users write these keys; ConfigError names it instead of a file.
SOURCE = "--kv-transfer-config"
SECTION = "kv_connector_extra_config"

LAYOUTS = ("auto", "flash_attn", "flash_infer", "mla")

Niceness = integer(0, 19)
PollSeconds = Annotated[
    float, Field(strict=True, ge=0, le=1, allow_inf_nan=False), Expected("a number of seconds in [0, 1]")
]
Layout = one_of(*LAYOUTS)
NonEmptyText = Annotated[StrictStr, Field(min_length=1), Expected("a non-empty string")]


class ConnectorSettings(WriterConfig):
    """The checked extra config of :class:`kvdump.integrations.vllm.KvdumpConnector`: the PD config's
    ``[writer]`` keys (inherited, with their types and defaults) and the connector's own.

    ``namespace`` defaults to one derived from the served model, so two models never share keys;
    prefill and decode instances of one model derive the same one. ``tp_rank``/``tp_size`` override
    what vLLM's parallel state says (for a worker run outside vLLM's distributed runtime).
    ``model_name`` names the checkpoint in the hash salt (:func:`kvdump.hashing.model_salt`); by
    default it is vLLM's model (the repo id or path it loaded), which is what kvdump's transformers
    integration uses too. Set it when deployments load one checkpoint from different paths.
    ``worker_nice`` (0) and ``idle_poll`` (0.5 ms) default to what a GPU server wants: its CPUs are
    mostly idle, so the workers keep the caller's priority and one polls the queue, sparing the
    forward's thread a wake-up per layer."""

    store_url: StoreUrl
    store_options: StoreOptions = Field(default_factory=no_options)
    namespace: Namespace | None = None
    model_name: NonEmptyText | None = None
    worker_nice: Niceness = 0
    idle_poll: PollSeconds = 0.0005
    save_timeout: Seconds = 60.0
    load_timeout: Seconds = 60.0
    lookup_timeout: Seconds = 5.0
    kv_layout: Layout = "auto"
    tp_size: TpSize | None = None
    tp_rank: TpRank | None = None

    check_tp_rank = field_validator("tp_rank")(tp_rank_below_tp_size)

    @property
    def resolved_store_url(self) -> str:
        """``store_url`` with ``store_options`` merged into its query string."""
        return url_with_options(self.store_url, self.store_options)

    def writer_kwargs(self) -> dict[str, Any]:
        """The :class:`kvdump.AsyncWriter` keyword arguments these settings fix (not the key space)."""
        own = {"worker_nice": self.worker_nice, "idle_poll": self.idle_poll}
        return {**self.model_dump(include=set(WriterConfig.model_fields)), **own}


def parse_settings(extra: Mapping[str, Any] | None) -> ConnectorSettings:
    """Check ``extra`` (vLLM's ``kv_connector_extra_config``). Raises :class:`kvdump.config.ConfigError`
    naming the key at fault."""
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping):
        raise ConfigError(SOURCE, SECTION, f"expected a JSON object, got {type(extra).__name__}")
    try:
        return ConnectorSettings.model_validate(dict(extra))
    except ValidationError as error:
        raise config_error(error, ConnectorSettings, SOURCE, table=SECTION) from None

"""vLLM integration: :class:`KvdumpConnector`, a KV connector v1 for PD separation and prefix reuse.

Importing this package imports vLLM (tested with vLLM 0.32.0); ``import kvdump`` never does."""

from __future__ import annotations

try:
    import vllm  # noqa: F401
except ImportError as error:
    raise ImportError("kvdump.integrations.vllm needs vLLM (tested with 0.32.0): pip install 'kvdump[vllm]'") from error

from kvdump.integrations.vllm.connector import KvdumpConnector, default_namespace
from kvdump.integrations.vllm.metadata import BlockRun, KvdumpConnectorMetadata
from kvdump.integrations.vllm.settings import ConnectorSettings, parse_settings
from kvdump.integrations.vllm.stats import KvdumpConnectorStats

__all__ = [
    "BlockRun",
    "ConnectorSettings",
    "KvdumpConnector",
    "KvdumpConnectorMetadata",
    "KvdumpConnectorStats",
    "default_namespace",
    "parse_settings",
]

"""The connector's counters as vLLM's ``KVConnectorStats``, so vLLM logs and exports them.

Each side counts what it does between two ``get_kv_connector_stats`` calls; vLLM aggregates the
workers' and the scheduler's snapshots by summing them."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorStats

COUNTERS = (
    "saves",  # blocks saved (per layer)
    "save_bytes",
    "save_failures",  # steps whose save failed (nothing of the failed requests committed)
    "loads",  # blocks loaded (per layer)
    "load_bytes",
    "load_failures",  # blocks reported to vLLM through get_block_ids_with_load_errors
    "lookups",  # requests the scheduler looked up
    "lookup_failures",
    "query_tokens",  # prompt tokens the lookups asked about
    "hit_tokens",  # of those, tokens found committed in the store
    "barrier_waits",
)
TIMERS = ("barrier_wait_s", "lookup_s")


@dataclasses.dataclass
class KvdumpConnectorStats(KVConnectorStats):
    """Counters (see ``COUNTERS``) and accumulated seconds (``TIMERS``) of one interval."""

    def __post_init__(self) -> None:
        if not self.data:
            self.reset()

    def reset(self) -> None:
        self.data = {name: 0 for name in COUNTERS} | {name: 0.0 for name in TIMERS}

    def aggregate(self, other: KVConnectorStats) -> KVConnectorStats:
        for name, value in other.data.items():
            self.data[name] = self.data.get(name, 0) + value
        return self

    def reduce(self) -> dict[str, int | float]:
        out: dict[str, int | float] = {name: self.data.get(name, 0) for name in COUNTERS}
        waits = self.data.get("barrier_waits", 0)
        out["barrier_wait_ms_avg"] = 1e3 * self.data.get("barrier_wait_s", 0.0) / waits if waits else 0.0
        lookups = self.data.get("lookups", 0)
        out["lookup_us_avg"] = 1e6 * self.data.get("lookup_s", 0.0) / lookups if lookups else 0.0
        queried = self.data.get("query_tokens", 0)
        out["hit_rate"] = self.data.get("hit_tokens", 0) / queried if queried else 0.0
        return out

    def is_empty(self) -> bool:
        return not any(self.data.values())


class StatsCounter:
    """Thread-safe accumulation of one side's counters; ``take()`` hands over the interval's stats."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats = KvdumpConnectorStats()
        self._total = KvdumpConnectorStats()

    def add(self, **amounts: Any) -> None:
        with self._lock:
            for name, amount in amounts.items():
                if name not in self._stats.data:
                    raise KeyError(f"unknown connector statistic {name!r}")
                self._stats.data[name] += amount
                self._total.data[name] += amount

    def take(self) -> KvdumpConnectorStats | None:
        """The counts since the last call, or None when nothing happened."""
        with self._lock:
            taken, self._stats = self._stats, KvdumpConnectorStats()
        return None if taken.is_empty() else taken

    def totals(self) -> dict[str, int | float]:
        """Everything counted since the connector started (for logs and tests)."""
        with self._lock:
            return dict(self._total.data)

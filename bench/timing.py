"""Small timing helpers shared by the benchmarks: medians and interleaved (round-robin) runs.

Variants measured side by side must share the machine's state (frequency, caches, noisy
neighbours), so ``interleaved`` runs one call of each variant per round, rotating which goes first,
instead of timing one variant's repeats and then the next's."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of a non-empty sequence, nearest rank."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def summarize_ms(values_s: Sequence[float]) -> dict[str, float]:
    """Median, mean, min, max and p90 of durations given in seconds, in milliseconds."""
    ms = [v * 1e3 for v in values_s]
    return {
        "count": len(ms),
        "median_ms": median(ms),
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
        "p90_ms": percentile(ms, 0.9),
        "max_ms": max(ms),
    }


def time_call(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes (perf_counter)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(
    variants: Mapping[str, Callable[[], Any]],
    repeats: int,
    *,
    warmup: int = 1,
    before_each: Callable[[str], Any] | None = None,
) -> dict[str, list[float]]:
    """Run every variant ``warmup`` untimed rounds, then ``repeats`` timed rounds, round-robin.

    Round ``r`` starts at variant ``r % len(variants)``, so no variant always runs right after the
    same other one. ``before_each(name)`` runs untimed before each call (e.g. to reset state).
    Returns the seconds of each timed call, per variant, in round order."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if before_each is not None:
                before_each(name)
            elapsed = time_call(variants[name])
            if round_index >= warmup:
                times[name].append(elapsed)
    return times


def machine_info() -> dict[str, Any]:
    """What a result file records about the machine and versions it was measured on."""
    import torch

    import kvdump

    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "kvdump": kvdump.__version__,
    }

"""Statistics of the benchmark: percentiles, latency summaries, rates. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``fraction`` of the
    values at or below it (``fraction`` in [0, 1]; 0 gives the minimum, 1 the maximum).

    ``values`` must be sorted ascending and not empty.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    rank = max(1, math.ceil(fraction * len(values)))
    return values[rank - 1]


@dataclass(frozen=True)
class LatencySummary:
    """End-to-end latencies in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def summarize(latencies_s: Sequence[float]) -> LatencySummary | None:
    """Summary of latencies given in seconds; None when there are none."""
    if not latencies_s:
        return None
    ordered = sorted(latencies_s)

    def ms(seconds: float) -> float:
        return round(seconds * 1000, 2)

    return LatencySummary(
        count=len(ordered),
        p50_ms=ms(percentile(ordered, 0.50)),
        p95_ms=ms(percentile(ordered, 0.95)),
        p99_ms=ms(percentile(ordered, 0.99)),
        max_ms=ms(ordered[-1]),
        mean_ms=ms(sum(ordered) / len(ordered)),
    )


def rate(count: int, seconds: float) -> float:
    """Events per second, 0 when no time elapsed."""
    return round(count / seconds, 1) if seconds > 0 else 0.0


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator > 0 else None

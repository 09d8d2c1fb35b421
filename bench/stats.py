"""Small statistics helpers: percentiles with linear interpolation, medians of runs."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct`-th percentile (0-100), interpolating between the two nearest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    """n, p50, p95, p99 and max of a sample."""
    return {"n": len(values), "p50": round(percentile(values, 50), digits),
            "p95": round(percentile(values, 95), digits), "p99": round(percentile(values, 99), digits),
            "max": round(max(values), digits) if values else float("nan")}


def median(values: Iterable[float], digits: int = 2) -> float:
    found = [v for v in values if v == v]  # drop NaN
    return round(statistics.median(found), digits) if found else float("nan")


def median_of_runs(runs: Sequence[dict[str, float]], digits: int = 2) -> dict[str, float]:
    """Per key, the median over runs (each run a dict of figures)."""
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))] if runs else []
    return {k: median((run[k] for run in runs), digits) for k in keys}

"""Latency figures of open-loop runs, taken only from the runs that held their offered rate.

A run whose starts or completions fell behind its offer measured an overload; its figures are
kept (and shown, marked) but never stand for a target named at that rate.
"""

from __future__ import annotations

from typing import Any

from .stats import median
from .targets import check, not_held

PARTS = ("dispatch_ms", "claim_ms", "push_ms")
QUANTILES = ("p50", "p95", "p99")


def summarise(rate: float, count: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the runs that held `rate` (`median`) and of all of them (`median_all_runs`).

    Each run carries `rate` (a RateStep's `as_dict()` and `describe`) and a distribution per part."""
    held = [r for r in runs if r["rate"]["held"]]
    return {"rate_workflows_per_s": rate, "workflows_per_run": count, "runs": runs, "held_runs": len(held),
            "median": _medians(held), "median_all_runs": _medians(runs)}


def held_target(name: str, load: dict[str, Any], q: str, threshold: float, where: str = "") -> dict[str, Any]:
    """The dispatch target `q <= threshold` from the runs that held their rate; NOT HELD when none did."""
    held, runs = load["held_runs"], len(load["runs"])
    if not held:
        rates = "; ".join(r["rate"]["describe"] for r in load["runs"])
        measured = load["median_all_runs"]["dispatch_ms"][q]
        return not_held(name, "<=", threshold, "ms",
                        _joined(where, rates, f"the {q} there, {measured:g} ms, is an overload's"))
    return check(name, load["median"]["dispatch_ms"][q], "<=", threshold, "ms",
                 _joined(where, f"{held} of {runs} runs held their rate"))


def _medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {part: {q: median(r[part][q] for r in runs) for q in QUANTILES} for part in PARTS}


def _joined(*parts: str) -> str:
    return "; ".join(part for part in parts if part)

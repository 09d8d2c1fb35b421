"""The issue's targets, checked against measured figures (PASS/MISS)."""

from __future__ import annotations

import operator
from typing import Any

_OPS = {"<=": operator.le, ">=": operator.ge}


def check(name: str, value: float, op: str, threshold: float, unit: str, note: str = "") -> dict[str, Any]:
    """One target row: `value op threshold` decides PASS or MISS (NaN, nothing measured, is a MISS)."""
    measured = value == value
    return {"name": name, "value": round(value, 2) if measured else None,
            "target": f"{op} {threshold:g} {unit}".strip(), "unit": unit,
            "verdict": "PASS" if measured and _OPS[op](value, threshold) else "MISS", "note": note}


def not_held(name: str, op: str, threshold: float, unit: str, note: str) -> dict[str, Any]:
    """A target row whose figure could not be taken where the target names it (the offered rate was not
    held): no value, so that an overload's figure is never read as the target's."""
    return {"name": name, "value": None, "target": f"{op} {threshold:g} {unit}".strip(), "unit": unit,
            "verdict": "NOT HELD", "note": note}

"""Small judgements about the values a definition holds, shared by the validator
(`definitions.py`), the task kinds (`kinds/`) and the decider: is this text a `${...}`
template, a finite number in range, a version written as digits; how a message shows a value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, TypeGuard

from .limits import MAX_DURATION_SECONDS

NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)
"""A number written as text (epoch milliseconds, seconds)."""

TEN_YEARS = f"{MAX_DURATION_SECONDS} (10 years)"
MAX_VERSION = 2**31 - 1


def is_template(value: Any) -> bool:
    """Whether a text holds a `${...}` (resolved at run time)."""
    return isinstance(value, str) and "${" in value.replace("$${", "")


def names_key(value: Any, inputs: Mapping[str, Any]) -> bool:
    """Whether `value` names a key of `inputs` (a list or an object names none: `in` would need
    it hashable)."""
    return isinstance(value, str) and value in inputs


def is_default(value: Any) -> bool:
    """A value an export writes for a field it does not use."""
    return value is None or value is False or value == 0 or value in ("", {}, [])


def show(value: Any) -> str:
    """A value in a message, cut short: a problem must not quote a megabyte."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def finite_number(value: Any) -> bool:
    """False only for a number that is not finite or does not fit a double."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            return False
    return True


def number_problem(value: Any, field: str, *, low: float, high: float, unit: str = "") -> str | None:
    """Why `value` is not a finite number from `low` to `high`, if it is not."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and finite_number(value) \
            and low <= value <= high:
        return None
    bound = TEN_YEARS if high == MAX_DURATION_SECONDS else f"{high:g}"
    return f"'{field}' must be a number{unit} >= {low:g} and at most {bound}, got {show(value)}"


def digits(value: Any) -> TypeGuard[str]:
    """A version written as text, '3' (int() refuses '²', which isdigit() accepts, and 5,000 digits)."""
    return isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value) <= 18


def to_float(value: int | float | str) -> float:
    """float(value), infinite for an integer beyond a double (float() raises OverflowError)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def seconds_ms(seconds: Any) -> int:
    """A duration from a definition, in milliseconds, within 0 .. MAX_DURATION_SECONDS.

    Registration refuses anything else; this only keeps a definition stored before a bound
    existed (NaN, Infinity, 1e300) from raising out of `decide`: NaN counts as 0. A number in
    range, what every stored definition holds, is multiplied as it is (the same figure, in fewer
    steps: a step reads a few of these, issue 21)."""
    kind = type(seconds)
    if (kind is int or kind is float) and 0 <= seconds <= MAX_DURATION_SECONDS:
        return int(seconds * 1000)
    try:
        value = float(seconds)
    except (TypeError, ValueError, OverflowError):
        return 0
    if math.isnan(value):
        return 0
    return int(min(max(value, 0.0), float(MAX_DURATION_SECONDS)) * 1000)

"""User data as stored: JSON text that every part of the system can read back.

Python's json module writes NaN and Infinity (not JSON) and keeps unpaired UTF-16 surrogates
(not Unicode text); either would be accepted here and refused later, deep inside a decision,
by Lua's cjson or by the Redis client. So every payload is encoded strictly once, where it
enters, and refused there with a reason.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidArgument


def encode(value: Any, what: str) -> str:
    """`value` as compact JSON text; InvalidArgument naming `what` when it is not JSON."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"{what} is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgument(f"{what} is nested too deeply") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} holds text that is not Unicode (an unpaired surrogate such as "
                              "\\ud800)") from None
    return text

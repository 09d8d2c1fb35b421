"""JSON on the hot path: orjson (C, about ten times quicker than the standard library at writing the
records and payloads of a step) wherever it gives what the standard library gives.

Writing: orjson writes no integer beyond 64 bits and no key that is not a string; such values are
written by `json` (exact big integers; keys as strings), so the text is what json.dumps(value,
separators=(",", ":"), ensure_ascii=False) gives, give or take the spelling of a float's exponent
(1e-7 for 1e-07). One difference is left: orjson writes NaN and Infinity as null, as JavaScript's
JSON.stringify does, where `json` writes the tokens NaN and Infinity, which are not JSON (the API
refuses them in inputs and results; a system task's computed output is where one could appear).

Reading stays with `json` for anything a user wrote: orjson reads an integer beyond 64 bits as a
float, losing digits, and telling such a text apart first costs about what orjson saves.
`loads_own` is for what the node and the store's scripts write themselves (a task attempt's scalar
state, script answers): no user number in them."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON of `value`. Raises TypeError, ValueError or RecursionError for what JSON
    cannot hold."""
    try:
        return orjson.dumps(value)
    except TypeError:   # orjson.JSONEncodeError: a big integer, a non-string key, a surrogate, too deep
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps(value: Any) -> str:
    """Compact JSON text of `value` (no spaces, non-ASCII kept as it is); raises as `dumps_bytes`."""
    return dumps_bytes(value).decode()


def loads_own(text: str | bytes) -> Any:
    """The value of JSON that the node or the store's scripts wrote (never a user's numbers, which
    orjson could round): orjson, and `json` for a text orjson refuses."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)

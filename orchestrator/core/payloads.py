"""User data as stored: JSON text that every part of the system can read back.

Python's json module writes NaN and Infinity (not JSON) and keeps unpaired UTF-16 surrogates
(not Unicode text); either would be accepted here and refused later, deep inside a decision,
by Lua's cjson or by the Redis client. So every payload is encoded strictly once, where it
enters, and refused there with a reason.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidArgument, TooLarge

MAX_SAFE_INTEGER = 2**53
"""The API carries numbers as doubles (protobuf Struct, like JSON in JavaScript): a larger
integer would come back rounded, so it is refused where it enters instead."""

MAX_PAYLOAD_DEPTH = 30
"""Levels of objects and lists in one payload, the outermost counting as 1. Protobuf refuses
to decode a Struct much deeper (about 32 levels inside an answer), so a deeper payload could
be stored but its workflow could never be read back."""


def encode(value: Any, what: str) -> str:
    """`value` as compact JSON text; InvalidArgument naming `what` when it is not JSON, is
    nested deeper than MAX_PAYLOAD_DEPTH or holds an integer beyond 2^53."""
    _check_shape(value, what)
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


def _check_shape(value: Any, what: str) -> None:
    """Depth and integers, without recursion (a hostile payload may be 100,000 levels deep)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_PAYLOAD_DEPTH:
                raise InvalidArgument(f"{what} is nested deeper than {MAX_PAYLOAD_DEPTH} levels of objects and "
                                      "lists; flatten it or pass a reference to the data")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, float) and item.is_integer() and abs(item) > MAX_SAFE_INTEGER:
            raise InvalidArgument(f"{what} holds the number {item:g}, a whole number beyond 2^53: it was rounded "
                                  "on the way (numbers travel as doubles); send it as a string")
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_SAFE_INTEGER:
            shown = str(item) if item.bit_length() < 200 else f"of about {int(item.bit_length() * 0.30103)} digits"
            raise InvalidArgument(f"{what} holds the integer {shown}, beyond 2^53: numbers travel as doubles "
                                  "and it would come back rounded; send it as a string")


def require_text_keys(value: Any, what: str) -> None:
    """Every object key is text: YAML allows `{1: a}`, JSON and the API do not."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            bad = next((key for key in item if not isinstance(key, str)), None)
            if bad is not None:
                raise InvalidArgument(f"{what}: object keys must be text, got {type(bad).__name__} {bad!r:.40}")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class PayloadLimit:
    """The byte limit on one payload, checked wherever user data enters (API or event handler)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def check(self, what: str, encoded: str | bytes) -> None:
        """Bytes, not characters: a 1 MiB limit is 1 MiB of UTF-8 on the wire and in Redis."""
        size = len(encoded.encode()) if isinstance(encoded, str) else len(encoded)
        if size > self.max_bytes:
            raise TooLarge(f"{what} is {size} bytes encoded as JSON; the limit is {self.max_bytes} "
                           "bytes: pass a reference (a URL or an object-store key) instead of the data")


def whole_numbers(value: Any) -> Any:
    """Payloads travel as protobuf Structs, whose numbers are doubles: show 1.0 as 1, as it was
    given (integers past 2^53 never get this far, see `encode`)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return value


def checked_output(limit: PayloadLimit, raw: bytes | str, what: str = "task output") -> tuple[str | None, str]:
    """A worker's output as it may be stored: (JSON text, "") or (None, why not). An output that
    is too big, not JSON, not an object or not storable fails its attempt for good, with the reason."""
    try:
        limit.check(what, raw or b"{}")
        output = json.loads(raw or b"{}")
        if not isinstance(output, dict):
            raise InvalidArgument(f"{what} must be a JSON object")
        return encode(output, what), ""   # no NaN, no unpaired surrogates: what later steps can read
    except RecursionError:
        return None, f"{what} is nested too deeply"
    except (InvalidArgument, TooLarge) as exc:
        return None, str(exc)
    except ValueError as exc:
        return None, f"{what} is not valid JSON: {exc}"

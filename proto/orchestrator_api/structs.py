"""Conversions between protobuf Structs and plain JSON-like Python values.

A Struct stores every number as a double; reading one back, an integral value
becomes an int again so that `{"count": 3}` does not come back as `3.0`.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Mapping

from google.protobuf import json_format, struct_pb2

MAX_SAFE_INTEGER = 2**53   # the largest integer a double holds exactly


def to_struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    """A JSON-like mapping as a Struct; ValueError for what JSON cannot hold."""
    struct = struct_pb2.Struct()
    if value is None:
        return struct
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object (dict), got {type(value).__name__}")
    try:
        json_format.ParseDict(dict(value), struct)
    except json_format.ParseError as exc:
        raise ValueError(str(exc)) from exc
    return struct


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _from_value(item) for key, item in struct.fields.items()}


def _from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return [_from_value(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) <= MAX_SAFE_INTEGER:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None

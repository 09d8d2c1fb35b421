"""Conversions between protobuf Structs and plain JSON-like Python values.

A Struct stores every number as a double; reading one back, an integral value
becomes an int again so that `{"count": 3}` does not come back as `3.0`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

MAX_SAFE_INTEGER = 2**53


def to_struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if value:
        struct.update(value)
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
        if number.is_integer() and abs(number) < MAX_SAFE_INTEGER:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None

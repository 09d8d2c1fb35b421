"""Payload conversions shared by the worker and the client.

The worker stream carries task payloads as JSON bytes; the unary API carries
them as ``google.protobuf.Struct``. A Struct stores every number as a double,
so reading one back turns integral values into ``int`` again (``5.0 -> 5``).
Two limits follow from the wire type and are documented rather than hidden:
a float that happens to be integral (``2.0``) comes back as ``2``, and an
integer beyond 2**53 cannot survive a Struct exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor as _descriptor
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from orchestrator_api import structs as convert

__all__ = [
    "PayloadError",
    "encode_object",
    "decode_object",
    "to_struct",
    "from_struct",
    "restore_ints",
    "message_to_dict",
]

_INT64_TYPES = frozenset(
    {
        _descriptor.FieldDescriptor.TYPE_INT64,
        _descriptor.FieldDescriptor.TYPE_UINT64,
        _descriptor.FieldDescriptor.TYPE_SINT64,
        _descriptor.FieldDescriptor.TYPE_FIXED64,
        _descriptor.FieldDescriptor.TYPE_SFIXED64,
    }
)
_STRUCT_NAMES = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})


class PayloadError(ValueError):
    """A payload is not a JSON object, or cannot be encoded as one."""


def encode_object(value: Mapping[str, Any]) -> bytes:
    """Encode a mapping as compact JSON bytes; NaN and infinities are refused."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError) as err:
        raise PayloadError(str(err)) from err


def decode_object(data: bytes) -> dict[str, Any]:
    """Decode JSON bytes that must hold an object; empty bytes mean ``{}``."""
    if not data:
        return {}
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as err:
        raise PayloadError(f"invalid JSON: {err}") from err
    if not isinstance(value, dict):
        raise PayloadError(f"expected a JSON object, got {type(value).__name__}")
    return value


def to_struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    """Convert a JSON-like mapping (nested dicts, lists, numbers...) to a Struct."""
    try:
        return convert.to_struct(value)
    except ValueError as err:
        raise PayloadError(str(err)) from err


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """Convert a Struct to a dict, turning integral doubles back into ints."""
    return convert.from_struct(struct)


def restore_ints(value: Any) -> Any:
    """Recursively replace integral floats (within 2**53) by ints."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= convert.MAX_SAFE_INTEGER else value
    if isinstance(value, dict):
        return {key: restore_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [restore_ints(item) for item in value]
    return value


def message_to_dict(message: Message) -> dict[str, Any]:
    """Convert an API message to a plain dict with the proto field names.

    Fields left at their default are included (``attempt: 0``,
    ``valid: False``), int64 fields are ints rather than JSON strings, and
    Struct payloads have their integers restored.
    """
    raw = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return _restore_fields(message.DESCRIPTOR, raw)


def _restore_fields(descriptor: Any, data: dict[str, Any]) -> dict[str, Any]:
    """`descriptor`: a message Descriptor (the C implementation's type is not the Python one)."""
    for field in descriptor.fields:
        if field.name in data:
            data[field.name] = _restore_field(field, data[field.name])
    return data


def _restore_field(field: _descriptor.FieldDescriptor, value: Any) -> Any:
    if _is_repeated(field) and isinstance(value, list):
        return [_restore_value(field, item) for item in value]
    return _restore_value(field, value)


def _is_repeated(field: _descriptor.FieldDescriptor) -> bool:
    # protobuf >= 5 has `is_repeated`; older releases only `label`.
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return bool(getattr(field, "label", None) == _descriptor.FieldDescriptor.LABEL_REPEATED)  # pragma: no cover


def _restore_value(field: _descriptor.FieldDescriptor, value: Any) -> Any:
    message_type = field.message_type
    if message_type is not None and message_type.full_name in _STRUCT_NAMES:
        return restore_ints(value)
    if message_type is not None and isinstance(value, dict):
        return _restore_fields(message_type, value)
    if field.type in _INT64_TYPES and isinstance(value, str):
        return int(value)
    return value

"""core/fastjson.py: the same JSON as the standard library's, written by orjson where it can be."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from orchestrator.core import fastjson

# what a workflow's input or a worker's output may hold: numbers of any size, any text, nesting
values = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.floats(allow_nan=False, allow_infinity=False) | hs.text(),
    lambda inner: hs.lists(inner, max_size=5) | hs.dictionaries(hs.text(), inner, max_size=5),
    max_leaves=30)


def standard(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@given(values)
def test_what_is_written_reads_back_as_the_standard_librarys_text_does(value: Any) -> None:
    written = fastjson.dumps(value)
    assert json.loads(written) == json.loads(standard(value))
    assert fastjson.dumps_bytes(value).decode() == written


@pytest.mark.parametrize("value", [
    2 ** 70, -(2 ** 64), {"n": 123456789012345678901234567890},   # beyond 64 bits: exact, not refused
    {1: "a", None: "b"},                                              # keys that are not strings
    {"ü": "é", "emoji": "\U0001F600", "line": "a\u2028b"},            # non-ASCII kept as it is
])
def test_values_orjson_cannot_write_are_written_as_the_standard_library_writes_them(value: Any) -> None:
    assert fastjson.dumps(value) == standard(value)


def test_what_json_cannot_hold_is_refused_as_before() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises((TypeError, ValueError, RecursionError)):
        fastjson.dumps(loop)
    with pytest.raises(TypeError):
        fastjson.dumps({"a": {1, 2}})


def test_nan_and_infinity_are_written_as_null() -> None:
    """The one difference from json.dumps (which writes the non-JSON tokens NaN and Infinity)."""
    assert fastjson.dumps({"x": float("nan"), "y": [float("inf")]}) == '{"x":null,"y":[null]}'


def test_own_records_are_read_by_orjson_and_what_it_refuses_by_json() -> None:
    assert fastjson.loads_own('{"status":"IN_PROGRESS","started":1796566494000}') == {
        "status": "IN_PROGRESS", "started": 1796566494000}
    assert fastjson.loads_own(b"[1,2]") == [1, 2]
    assert fastjson.loads_own('{"x":NaN}')["x"] != fastjson.loads_own('{"x":NaN}')["x"]   # NaN, read by json
    with pytest.raises(ValueError):
        fastjson.loads_own("{not json")

"""The lean pipeline packs commands with hiredis in C (`lean_pipeline._packed`), not with redis-py's
packer, which encoded every argument in Python first (4.9 microseconds for a step's EVALSHA against
0.6). What goes on the wire must not change: the same bytes as redis-py's for every kind of value
the store sends, and whatever hiredis cannot pack (or a connection that encodes otherwise than in
strict UTF-8) packed by redis-py as before, refusals included."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from orchestrator.store.redis import lean_pipeline

STEP_LIKE: list[Any] = [
    ("EVALSHA", "a" * 40, 1, "wfo:{c:p9}", '{"id":"w1","out":"é ✓ 𝄞"}', "{}", '["s:t1","{}"]'),
    ("HGETALL", "wfo:{c:p9}:wf:w1"),
    ["XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "STREAMS", "s", ">"],   # a list, as some callers build them
    ("SET", b"raw\x00\xff", 1.5, "EX", 10 ** 12),
    ("ZADD", "z", 1e20, "a", 1e-7, "b", float("-inf"), "c", -0.0, "d", 2 ** 63, "e", -(2 ** 70), "f", 0),
    ("SCRIPT LOAD", "return 1"),   # a name of two words: cut in two, as redis-py does
    (b"CLIENT SETNAME", "n"),
    ("SET", "k", ""),
]


def _redis_py(connection: Connection, commands: list[Any]) -> bytes:
    return b"".join(connection.pack_commands(commands))


def _ours(connection: Connection, commands: list[Any]) -> bytes:
    packed = lean_pipeline._packed(connection, commands)
    return packed if isinstance(packed, bytes) else b"".join(packed)


def test_the_bytes_are_redis_pys_for_every_kind_of_value_the_store_sends() -> None:
    connection = Connection()
    assert _ours(connection, STEP_LIKE) == _redis_py(connection, STEP_LIKE)
    for command in STEP_LIKE:
        assert _ours(connection, [command]) == _redis_py(connection, [command])


def test_a_connection_that_encodes_otherwise_is_packed_by_redis_py() -> None:
    connection = Connection(encoding="latin-1")
    commands = [("SET", "k", "café")]
    assert _ours(connection, commands) == _redis_py(connection, commands)
    assert b"caf\xe9" in _ours(connection, commands)   # latin-1, not UTF-8


def test_what_hiredis_cannot_pack_is_left_to_redis_py_refusals_included() -> None:
    connection = Connection()
    viewed = [("SET", "k", memoryview(b"viewed"))]
    assert _ours(connection, viewed) == _redis_py(connection, viewed)
    with pytest.raises(DataError):   # redis-py's refusal of a bool, as before
        lean_pipeline._packed(connection, [("SET", "k", True)])
    with pytest.raises(UnicodeEncodeError):   # a lone surrogate is no UTF-8, with either packer
        lean_pipeline._packed(connection, [("SET", "k", "\ud800")])

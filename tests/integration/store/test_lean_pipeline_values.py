"""Values written through the lean pipeline (packed by hiredis, `lean_pipeline._packed`) come back
from a real Redis as they were sent: text in UTF-8 beyond ASCII, raw bytes, numbers, empty values,
a script's arguments, a command named in two words."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import redis.asyncio

from orchestrator.store.redis import lean_pipeline


def test_values_come_back_from_redis_as_they_were_sent(redis_server: Any) -> None:
    key = f"lean{uuid.uuid4().hex[:8]}"
    text = 'é ✓ 𝄞 {"nested": "json"} \n\t'

    async def scenario() -> list[Any]:
        pool = redis.asyncio.ConnectionPool.from_url(redis_server.url)
        connections = lean_pipeline.PoolConnections(pool)
        try:
            return await lean_pipeline.execute(connections, [
                ("DEL", key),
                ("HSET", key, "text", text, "raw", b"\x00\xff\r\n", "int", 10 ** 15, "float", 0.1 + 0.2, "empty", ""),
                ("HMGET", key, "text", "raw", "int", "float", "empty"),
                ("EVAL", "return ARGV[1] .. '|' .. #ARGV[2]", 0, text, b"\x00\x01"),
                ("SCRIPT LOAD", "return 7"),
            ], {})
        finally:
            await pool.aclose()

    _, written, values, evaluated, sha = asyncio.run(scenario())
    assert written == 5
    assert values == [text.encode(), b"\x00\xff\r\n", b"1000000000000000", b"0.30000000000000004", b""]
    assert evaluated == (text + "|2").encode()
    assert len(sha) == 40

"""What the two HTTP doors (the console and the Conductor API) share that is not a use case."""

from __future__ import annotations

from collections.abc import AsyncIterable

from .errors import Refused


async def bounded_body(declared_length: str, stream: AsyncIterable[bytes], max_bytes: int, what: str) -> bytes:
    """An HTTP body (REST and console alike), refused (RESOURCE_EXHAUSTED) past `max_bytes`, declared
    or not: a chunked body is read only that far, never whole."""
    if declared_length.isdigit() and int(declared_length) > max_bytes:
        raise Refused("RESOURCE_EXHAUSTED", f"{what} is {declared_length} bytes; the limit is {max_bytes}")
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > max_bytes:
            raise Refused("RESOURCE_EXHAUSTED", f"{what} exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)

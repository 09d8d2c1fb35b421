"""One read under way per key: callers that need the same answer at once share one round trip.

A node's many concurrent callers (a REST poller's threads, the starts of one burst) often find the
same cached figure out of date at the same moment; without this each would read it afresh (64
partitions each), with it the first reads and the others await its answer. A caller cancelled while
waiting does not cancel the read the others wait on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._under_way: dict[str, asyncio.Future[T]] = {}

    async def run(self, key: str, read: Callable[[], Awaitable[T]]) -> T:
        """`read()`'s answer: that of the read of `key` under way if there is one, else of a new one."""
        flight = self._under_way.get(key)
        if flight is None:
            flight = self._under_way[key] = asyncio.ensure_future(read())
            flight.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(flight)

    def _landed(self, key: str, flight: asyncio.Future[T]) -> None:
        if self._under_way.get(key) is flight:
            del self._under_way[key]
        if not flight.cancelled():
            flight.exception()   # retrieved: an error nobody awaited any more is not logged as lost

    def __len__(self) -> int:
        """Reads under way."""
        return len(self._under_way)

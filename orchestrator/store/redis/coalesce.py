"""Calls made during one turn of the event loop, sent to Redis together.

A node takes many workers' results, claims, heartbeats and starts at once; each is one script
call. Written one by one, each costs a write on the socket and a wake-up for its reply; gathered
per loop turn, one pipeline carries them all and their replies come back together. Each call
still gets its own reply (or its own error): one refused call never fails the others. A broken
connection fails the calls sent on it, as it would have one by one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")


class Coalesced(Generic[Item]):
    """`call(item)`: the reply of one call, sent in the pipeline of this loop turn's calls;
    `replies(items)`: several calls of that pipeline, each reply or error as a value. `send`
    runs one pipeline: items in, replies or per-call errors (as values) out, in order."""

    def __init__(self, send: Callable[[list[Item]], Awaitable[list[Any]]]) -> None:
        self._send = send
        self._waiting: list[tuple[Item, asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, item: Item) -> Any:
        answer = await self._enqueue(item)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def replies(self, items: Sequence[Item]) -> list[Any]:
        """Each item's reply, or its error as a value; a pipeline that failed as a whole raises."""
        if not items:
            return []
        futures = [self._enqueue(item) for item in items]
        return list(await asyncio.gather(*futures))

    def _enqueue(self, item: Item) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((item, reply))
        if len(self._waiting) == 1:
            # the task's first step comes after every callback already due, so it takes the
            # calls of this whole turn (those made before it starts join it too)
            task = loop.create_task(self._deliver())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return reply

    async def _deliver(self) -> None:
        batch, self._waiting = self._waiting, []
        try:
            replies = await self._send([item for item, _ in batch])
        except BaseException as exc:   # the pipeline failed as a whole: so does each call in it
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, reply), answer in zip(batch, replies):
            if not reply.done():   # its caller may have given up (cancelled)
                reply.set_result(answer)

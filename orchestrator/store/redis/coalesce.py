"""Calls of one script made during one turn of the event loop, sent to Redis together.

A node takes many workers' results at once; each is one script call. Written one by one, each
costs a write on the socket and a wake-up for its reply; gathered per loop turn, one pipeline
carries them all and their replies come back together. Each call still gets its own reply (or its
own error): one refused call never fails the others. A broken connection fails the calls sent
on it, as it would have one by one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[list[list[str]]], Awaitable[list[Any]]]


class Coalesced:
    """`call(args)`: the reply of one script call, sent in the pipeline of this loop turn's calls
    (`send` runs one pipeline: argument lists in, replies or per-call errors out, in order)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._waiting: list[tuple[list[str], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, args: list[str]) -> Any:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((args, reply))
        if len(self._waiting) == 1:
            loop.call_soon(self._flush)
        answer = await reply
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._deliver(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _deliver(self, batch: list[tuple[list[str], asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._send([args for args, _ in batch])
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

"""Waiting for workflows without polling: Redis pub/sub from the transition scripts.

Every script that changes a workflow publishes on `P:changed:<id>`; every terminal
transition publishes the id on `P:done`. One subscription per node serves all the
start-and-wait callers; each watch stream has its own subscription to its workflow.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import AsyncIterator

from .errors import REDIS_UNAVAILABLE
from .store import Store

log = logging.getLogger(__name__)

SAFETY_RECHECK_S = 1.0   # a missed message (Redis restart) costs at most this much delay


class Notifier:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._listener:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)

    async def wait_done(self, workflow_id: str, timeout_s: float, is_done) -> None:  # type: ignore[no-untyped-def]
        """Return when `is_done()` (an async check of stored state) is true or the timeout passes."""
        event = asyncio.Event()
        self._waiters[workflow_id].add(event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while not await is_done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                event.clear()
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, SAFETY_RECHECK_S))
                except asyncio.TimeoutError:
                    pass
        finally:
            self._waiters[workflow_id].discard(event)
            if not self._waiters[workflow_id]:
                del self._waiters[workflow_id]

    async def _listen(self) -> None:
        while True:
            pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.store.key("done"))
                async for message in pubsub.listen():
                    for event in self._waiters.get(message["data"], ()):
                        event.set()
            except REDIS_UNAVAILABLE as exc:
                log.warning("done channel lost (%s); resubscribing", exc)
                await asyncio.sleep(0.2)
            finally:
                await pubsub.aclose()

    async def changes(self, workflow_id: str) -> AsyncIterator[None]:
        """Yields once at once, then after each change of the workflow (or each safety interval)."""
        pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.store.key("changed", workflow_id))
            yield None
            while True:
                message = await pubsub.get_message(timeout=SAFETY_RECHECK_S)
                if message is not None:
                    # collapse a burst of changes into one update
                    while await pubsub.get_message(timeout=0.0) is not None:
                        pass
                yield None
        finally:
            await pubsub.aclose()

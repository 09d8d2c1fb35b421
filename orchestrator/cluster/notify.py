"""Waiting for workflows without polling: the store's broadcasts of ended and changed workflows.

One subscription per node serves all the start-and-wait callers: it hears the ends of the
workflows this node said it waits for (`Store.expect_end`), and of no others, so a workflow
nobody waits for costs no message at all. Each watch stream follows its own workflow's changes,
which are published only while it is watched.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable

from ..store import Store, Topic

SAFETY_RECHECK_S = 1.0   # a missed message (Redis restart) costs at most this much delay


class Notifier:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._listener = asyncio.create_task(self.store.listen(Topic.DONE, self._on_done))

    async def stop(self) -> None:
        if self._listener:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)

    def _on_done(self, workflow_id: str) -> None:
        for event in self._waiters.get(workflow_id, ()):
            event.set()

    async def wait_done(self, workflow_id: str, timeout_s: float, is_done: Callable[[], Awaitable[bool]], *,
                        expected: bool = False) -> None:
        """Return when `is_done()` (an async check of stored state) is true or the timeout passes.
        `expected`: the store already knows this node waits for it (a start made with `expect_end`)."""
        event = asyncio.Event()
        self._waiters[workflow_id].add(event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            if not expected:   # before the first check: an end after it is then heard
                await self.store.expect_end(workflow_id)
            while True:
                # Cleared before the check, never after it: an end heard while the check reads
                # the store must still wake the wait below (cleared after, it cost a whole
                # SAFETY_RECHECK_S to about 1 call in 100).
                event.clear()
                if await is_done():
                    return
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, SAFETY_RECHECK_S))
                except TimeoutError:
                    pass
        finally:
            self._waiters[workflow_id].discard(event)
            if not self._waiters[workflow_id]:
                del self._waiters[workflow_id]

    def changes(self, workflow_id: str) -> AsyncIterator[None]:
        """Yields at once, then after each change of the workflow (or each safety interval)."""
        return self.store.changes(workflow_id, SAFETY_RECHECK_S)

"""The one subscription loop every listener on Redis pub/sub uses.

Pub/sub is only a wake-up: a message can be lost while Redis restarts, so every
listener also has a safety re-check, and `on_subscribed` lets it catch up on what
was published while it was not listening.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any


from .errors import REDIS_UNAVAILABLE

log = logging.getLogger(__name__)

RESUBSCRIBE_MIN_S = 0.2
RESUBSCRIBE_MAX_S = 5.0
CLOSE_TIMEOUT_S = 1.0
_CLOSE_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *REDIS_UNAVAILABLE)
CHECK_S = 1.0              # how often a quiet subscription looks whether it was cancelled


async def listen(client: Any, channel: str, on_message: Callable[[str], None],
                 on_subscribed: Callable[[], None] | None = None) -> None:
    """`client` is a decoding `redis.asyncio.Redis` (typed Any: see `RedisStore.__init__`).

    Call `on_message(data)` for each message on `channel` until cancelled; resubscribe
    after an outage, backing off from 0.2 s to 5 s so a dead Redis is not hammered."""
    backoff = RESUBSCRIBE_MIN_S
    while True:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            backoff = RESUBSCRIBE_MIN_S
            if on_subscribed is not None:
                on_subscribed()
            while True:
                _raise_if_cancelled()
                message = await pubsub.get_message(timeout=CHECK_S)
                if message is not None:
                    on_message(message["data"])
        except REDIS_UNAVAILABLE as exc:
            log.warning("subscription to %s lost (%s); subscribing again in %.1f s", channel, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESUBSCRIBE_MAX_S)
        finally:
            await _close(pubsub)


async def changes(client: Any, channel: str, recheck_s: float,
                  subscribe_timeout_s: float | None = None) -> AsyncIterator[None]:
    """Yield once at once, then after each message (a burst counts once) or every `recheck_s`.
    `subscribe_timeout_s`: how long subscribing may take (TimeoutError) when `client`'s own
    socket timeout is longer (the pool for blocking reads)."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        async with asyncio.timeout(subscribe_timeout_s):
            await pubsub.subscribe(channel)
        yield None
        while True:
            _raise_if_cancelled()
            message = await pubsub.get_message(timeout=min(recheck_s, CHECK_S))
            if message is not None:
                while await pubsub.get_message(timeout=0.0) is not None:
                    pass
            yield None
    finally:
        await _close(pubsub)


def _raise_if_cancelled() -> None:
    """redis-py (8.1 at least) can swallow a cancellation that arrives while it sets up the
    connection of a subscribe; the task then reads on for ever and a stopping node waits for
    it. So the loops read with a timeout and check whether their task was asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _close(pubsub: Any) -> None:
    """Close a subscription, within CLOSE_TIMEOUT_S. Cancelled while it was still subscribing
    (a node that stops right after it started), redis-py's close can wait for ever on the
    connection the cancelled subscribe left half set up; the connection is dropped instead."""
    try:
        await asyncio.wait_for(pubsub.aclose(), CLOSE_TIMEOUT_S)
    except _CLOSE_ERRORS:
        log.debug("closing a subscription took too long or failed; its connection is dropped")

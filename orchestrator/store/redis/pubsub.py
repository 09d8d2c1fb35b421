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
            async for message in pubsub.listen():
                on_message(message["data"])
        except REDIS_UNAVAILABLE as exc:
            log.warning("subscription to %s lost (%s); subscribing again in %.1f s", channel, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESUBSCRIBE_MAX_S)
        finally:
            await pubsub.aclose()


async def changes(client: Any, channel: str, recheck_s: float) -> AsyncIterator[None]:
    """Yield once at once, then after each message (a burst counts once) or every `recheck_s`."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(channel)
        yield None
        while True:
            message = await pubsub.get_message(timeout=recheck_s)
            if message is not None:
                while await pubsub.get_message(timeout=0.0) is not None:
                    pass
            yield None
    finally:
        await pubsub.aclose()

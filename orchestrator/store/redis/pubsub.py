"""The one subscription loop every listener on Redis pub/sub uses.

Pub/sub is only a wake-up: a message can be lost while Redis restarts, so every
listener also has a safety re-check, and `on_subscribed` lets it catch up on what
was published while it was not listening.

On a Redis Cluster a PUBLISH reaches every server of the cluster, replicas too, so a subscription
may be made on any of them (`_subscription`): each is made on a server picked at random, another
than the one the last subscription lost, rather than on the master of the channel's slot, which
redis-py's cluster client picks. All of a node's channels are in the global slot: with the cluster
client's choice, that slot's master down would silence every wake-up until its replica's promotion
and the map's refresh (6 s measured here: the resubscriptions back off meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from redis.asyncio.cluster import RedisCluster

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
    lost_on = ""
    while True:
        pubsub = _subscription(client, lost_on, ignore_subscribe_messages=True)
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
            lost_on = _server_of(pubsub)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESUBSCRIBE_MAX_S)
        finally:
            await _close(pubsub)


async def changes(client: Any, channel: str, recheck_s: float,
                  subscribe_timeout_s: float | None = None) -> AsyncIterator[None]:
    """Yield once at once, then after each message (a burst counts once) or every `recheck_s`.
    `subscribe_timeout_s`: how long subscribing may take (TimeoutError) when `client`'s own
    socket timeout is longer (the pool for blocking reads)."""
    pubsub = _subscription(client, "", ignore_subscribe_messages=True)
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


def _subscription(client: Any, avoid: str, **options: Any) -> Any:
    """A PubSub of `client`; on a Redis Cluster, on a server picked at random (other than `avoid`,
    the one a subscription was lost on, while there is another): see the module's docstring."""
    if not isinstance(client, RedisCluster):
        return client.pubsub(**options)
    servers = [node for node in client.get_nodes() if node.name != avoid] or client.get_nodes()
    if not servers:   # the map of the cluster is not read yet: the client picks
        return client.pubsub(**options)
    return client.pubsub(node=random.choice(servers), **options)


def _server_of(pubsub: Any) -> str:
    """The name of the server a cluster subscription was on ('' for one Redis)."""
    node = getattr(pubsub, "node", None)
    return str(node.name) if node is not None else ""


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


class ChannelSet:
    """One channel per name (`channel_of(name)`), subscribed on one connection while its name is
    wanted: a node hears only the broadcasts it has a use for (the `ready` of the task types its
    workers serve). `on_message(name, payload)` runs for each message; `on_subscribed(name)` once
    each subscription is confirmed (and again after a resubscription), so the caller catches up
    on what was published before it listened.

    Pub/sub is a wake-up only, as above: the caller keeps its safety re-check."""

    def __init__(self, client: Any, channel_of: Callable[[str], str], on_message: Callable[[str, str], None],
                 on_subscribed: Callable[[str], None]) -> None:
        self._client = client
        self._channel_of = channel_of
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._names: dict[str, str] = {}       # channel -> name, of every name wanted
        self._subscribed: set[str] = set()     # channels asked for on the current connection
        self._pubsub: Any = None
        self._lock = asyncio.Lock()
        self._wanted_changed = asyncio.Event()
        self._syncing: set[asyncio.Task[None]] = set()

    def want(self, names: Collection[str]) -> None:
        """Listen to exactly these names from now on (as soon as Redis confirms each)."""
        channels = {self._channel_of(name): name for name in names}
        if channels.keys() == self._names.keys():
            return
        self._names = channels
        self._wanted_changed.set()
        if self._pubsub is not None and self._subscribed:   # the reader is reading: change it beside it
            task = asyncio.create_task(self._sync_quietly())
            self._syncing.add(task)
            task.add_done_callback(self._syncing.discard)

    async def run(self) -> None:
        """Read until cancelled; resubscribe after an outage, backing off as `listen` does."""
        backoff = RESUBSCRIBE_MIN_S
        try:
            lost_on = ""
            while True:
                pubsub = self._pubsub = _subscription(self._client, lost_on)
                self._subscribed = set()
                try:
                    while True:
                        _raise_if_cancelled()
                        if not self._names and not self._subscribed:   # nothing to hear: no connection needed
                            self._wanted_changed.clear()
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(self._wanted_changed.wait(), CHECK_S)
                            continue
                        await self._sync()
                        backoff = RESUBSCRIBE_MIN_S
                        message = await pubsub.get_message(timeout=CHECK_S)
                        if message is not None:
                            self._handle(message)
                except REDIS_UNAVAILABLE as exc:
                    log.warning("subscription to %d channel(s) lost (%s); subscribing again in %.1f s",
                                len(self._names), exc, backoff)
                    lost_on = _server_of(pubsub)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RESUBSCRIBE_MAX_S)
                finally:
                    self._pubsub = None
                    await _close(pubsub)
        finally:
            for task in list(self._syncing):
                task.cancel()

    def _handle(self, message: dict[str, Any]) -> None:
        name = self._names.get(message["channel"])
        if name is None:   # a channel given up meanwhile
            return
        if message["type"] == "message":
            self._on_message(name, message["data"])
        elif message["type"] == "subscribe":
            self._on_subscribed(name)

    async def _sync(self) -> None:
        """Subscribe to the channels wanted and not asked for yet; unsubscribe from the others."""
        async with self._lock:
            pubsub = self._pubsub
            if pubsub is None:
                return
            wanted = set(self._names)
            more, fewer = sorted(wanted - self._subscribed), sorted(self._subscribed - wanted)
            if more:
                await pubsub.subscribe(*more)
            if fewer:
                await pubsub.unsubscribe(*fewer)
            self._subscribed = wanted

    async def _sync_quietly(self) -> None:
        """A change made beside the reader: if it fails, the reader meets the outage and resubscribes."""
        try:
            await self._sync()
        except REDIS_UNAVAILABLE as exc:
            log.debug("changing the subscribed channels failed (%s); the reader will resubscribe", exc)

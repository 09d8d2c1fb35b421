"""``@subscribe`` and the ``Subscriber`` that runs it: services that react to events (choreography).

    from worker import Subscriber, subscribe

    @subscribe("orders.created", group="billing")
    def bill(event: Event) -> None:
        charge(event.payload["order"], idempotency_key=event.event_id)

    Subscriber(endpoints=["127.0.0.1:50051"], handlers=[bill]).run_sync()

A group is a consumer group on the topic's stream, shared by every Subscriber that names it:
each event goes to one of them. Delivery is at-least-once: an event is acknowledged once its
handler returned; if the handler raises (or the process dies), the event is delivered again,
to whichever member of the group asks first, after ``redeliver_after_s``; after
``max_deliveries`` it goes to the ``deadletter`` topic instead. So handlers dedupe by
``event.event_id``. A group created now starts with the events published from now on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ._client import WorkflowClient
from .errors import ClientError

__all__ = ["Event", "Subscriber", "SubscriberStats", "Subscription", "subscribe"]

log = logging.getLogger("worker.subscriber")

F = TypeVar("F", bound=Callable[..., Any])
_ATTRIBUTE = "__orchestrator_subscription__"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}\Z")
_RETRY_S = 0.5


@dataclass(frozen=True)
class Event:
    """One event as a subscriber receives it."""

    event_id: str               # "<ms>-<n>": unique and ordered per topic; dedupe by it
    topic: str
    key: str
    payload: dict[str, Any]
    published_at_ms: int
    deliveries: int             # 1 the first time; more when it is delivered again


@dataclass(frozen=True)
class Subscription:
    """What ``@subscribe`` records on a handler."""

    topic: str
    group: str
    redeliver_after_s: float = 30.0
    max_deliveries: int = 5
    batch: int = 16


def subscribe(topic: str, *, group: str | None = None, redeliver_after_s: float = 30.0, max_deliveries: int = 5,
              batch: int = 16) -> Callable[[F], F]:
    """Mark a function as the handler of ``topic``'s events for consumer group ``group``
    (default: the function's module and name). It receives an ``Event``; it may be
    ``async def``. The function is returned unchanged."""
    def decorate(fn: F) -> F:
        name = group if group is not None else re.sub(r"[^A-Za-z0-9_.\-]", "_", f"{fn.__module__}.{fn.__qualname__}")
        for what, value in (("topic", topic), ("group", name)):
            if not isinstance(value, str) or not _NAME.match(value):
                raise ValueError(f"{what} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}, got {value!r}")
        if not 0 < redeliver_after_s <= 86_400 or not 1 <= max_deliveries <= 1000 or not 1 <= batch <= 256:
            raise ValueError("redeliver_after_s must be (0, 86400], max_deliveries 1..1000, batch 1..256")
        setattr(fn, _ATTRIBUTE, Subscription(topic, name, redeliver_after_s, max_deliveries, batch))
        return fn
    return decorate


def subscription_of(handler: object) -> Subscription | None:
    found = getattr(handler, _ATTRIBUTE, None)
    return found if isinstance(found, Subscription) else None


@dataclass
class SubscriberStats:
    received: int = 0
    handled: int = 0          # the handler returned: acknowledged
    failed: int = 0           # the handler raised: left for redelivery
    redelivered: int = 0      # received with deliveries > 1


@dataclass
class _Loop:
    subscription: Subscription
    handler: Callable[[Event], Any]
    thread: threading.Thread | None = None


class Subscriber:
    """Runs ``@subscribe`` handlers: one receiving loop per subscription, handlers in a pool."""

    def __init__(self, *, endpoints: Sequence[str], handlers: Sequence[Callable[..., Any]], concurrency: int = 8,
                 consumer: str | None = None, wait_s: float = 2.0, token: str | None = None,
                 namespace: str | None = None, tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None) -> None:
        self._loops = []
        seen: set[tuple[str, str]] = set()
        for handler in handlers:
            subscription = subscription_of(handler)
            if subscription is None:
                raise TypeError(f"{getattr(handler, '__qualname__', handler)!r} is not decorated with @subscribe")
            if (subscription.topic, subscription.group) in seen:
                raise ValueError(f"two handlers for topic {subscription.topic!r} in group {subscription.group!r}")
            seen.add((subscription.topic, subscription.group))
            self._loops.append(_Loop(subscription, handler))
        if not self._loops:
            raise ValueError("a Subscriber needs at least one @subscribe handler")
        if not 0 < wait_s <= 30:
            raise ValueError("wait_s must be in (0, 30]")
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stats = SubscriberStats()
        self._client = WorkflowClient(list(endpoints), token=token, namespace=namespace, tls_ca=tls_ca,
                                      tls_cert=tls_cert, tls_key=tls_key)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="event-handler")
        self._wait_ms = int(wait_s * 1000)
        self._stopping = threading.Event()
        self._lock = threading.Lock()   # guards `stats`, updated from every loop and handler thread

    def start(self) -> None:
        """Start the receiving loops in background threads."""
        for loop in self._loops:
            loop.thread = threading.Thread(target=self._run, args=(loop,), daemon=True,
                                           name=f"subscription-{loop.subscription.topic}")
            loop.thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop receiving, let running handlers finish, close. Events not yet handled stay
        unacknowledged and are delivered again after their group's redelivery time."""
        self._stopping.set()
        for loop in self._loops:
            if loop.thread is not None:
                loop.thread.join(timeout_s)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def run_sync(self) -> None:
        """Run until SIGINT or SIGTERM."""
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        self.start()
        stop.wait()
        self.stop()

    def _run(self, loop: _Loop) -> None:
        sub = loop.subscription
        while not self._stopping.is_set():
            try:
                raw = self._client.receive_events(
                    sub.topic, sub.group, consumer=self.consumer, max_events=sub.batch, wait_ms=self._wait_ms,
                    redeliver_after_ms=int(sub.redeliver_after_s * 1000), max_deliveries=sub.max_deliveries)
            except ClientError as exc:
                log.warning("receiving %s for group %s failed (%s); trying again", sub.topic, sub.group, exc)
                self._stopping.wait(_RETRY_S)
                continue
            events = [_event(item) for item in raw]
            with self._lock:
                self.stats.received += len(events)
                self.stats.redelivered += sum(1 for e in events if e.deliveries > 1)
            futures: list[Future[bool]] = [self._pool.submit(self._handle, loop, event) for event in events]
            handled = [event.event_id for event, future in zip(events, futures) if future.result()]
            if handled:
                try:
                    self._client.ack_events(sub.topic, sub.group, handled)
                except ClientError as exc:   # they will be delivered again: handlers dedupe
                    log.warning("acknowledging %d events of %s failed (%s)", len(handled), sub.topic, exc)

    def _handle(self, loop: _Loop, event: Event) -> bool:
        try:
            result = loop.handler(event)
            if inspect.isawaitable(result):
                asyncio.run(_awaited(result))
        except Exception as exc:
            log.warning("handler of %s (group %s) failed on event %s (delivery %d): %s: %s; it will be delivered "
                        "again", event.topic, loop.subscription.group, event.event_id, event.deliveries,
                        type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            with self._lock:
                self.stats.failed += 1
            return False
        with self._lock:
            self.stats.handled += 1
        return True


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _event(item: dict[str, Any]) -> Event:
    return Event(event_id=str(item.get("event_id", "")), topic=str(item.get("topic", "")),
                 key=str(item.get("key", "")), payload=dict(item.get("payload") or {}),
                 published_at_ms=int(item.get("published_at_ms") or 0), deliveries=int(item.get("deliveries") or 1))

"""The event bus (publish, read, retention, subscriptions) and the event handlers that consume it.

Topics belong to namespaces as names do (core/namespaces.py): a caller publishes to, reads and
subscribes to its own namespace's `orders`. So do event handlers: one registered in a namespace
consumes that namespace's topic and acts on its workflows and topics only. Topics and handlers
are answered with their names as the caller's namespace sees them (`relative`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.clock import now_ms
from ..core.errors import InvalidArgument
from ..core.events import DEFAULT_MAX_DELIVERIES, HANDLER_NAME, BusEvent, normalise_handler, topic_name
from ..core.limits import MAX_DURATION_SECONDS
from ..core.namespaces import namespace_of, qualified, relative, topic_in
from ..core.payloads import PayloadLimit, encode, require_text_keys
from ..store import Store
from ..store.protocol import TopicInfo
from .access import allowed, request_namespace

MAX_KEY_LENGTH = 256
MAX_READ = 1000
MAX_TOPIC_LEN = 100_000_000
MAX_RECEIVE = 256
MAX_WAIT_MS = 30_000
SUBSCRIPTION_PREFIX = "sub:"


@dataclass(frozen=True)
class Topic:
    name: str            # as the caller's namespace names it
    info: TopicInfo


@dataclass(frozen=True)
class Receive:
    """What a subscriber asks for (0: the default of each number)."""

    topic: str
    group: str
    consumer: str = ""
    max_events: int = 0
    wait_ms: int = 0
    redeliver_after_ms: int = 0
    max_deliveries: int = 0


def _topic(text: str) -> str:
    """The topic `text` names in the caller's namespace, as stored."""
    return topic_in(request_namespace(), topic_name(text))


def is_event_id(text: str) -> bool:
    return 0 < len(text) <= 64 and all(part.isdigit() for part in text.split("-", 1))


def subscription_group(name: str) -> str:
    """The consumer group of a subscription: prefixed, so it never meets a handler's group."""
    if not HANDLER_NAME.match(name or ""):
        raise InvalidArgument("group must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
    return SUBSCRIPTION_PREFIX + name


def handler_as_seen(handler: dict[str, Any]) -> dict[str, Any]:
    """A stored handler as its namespace sees it."""
    return {**handler, "name": relative(handler["name"]), "event": relative(handler["event"])}


class LocalConsumers(Protocol):
    """This node's consumers of the event handlers (cluster/events.py): an event published here is
    read for them in the call that appends it, so that it is handled here at once."""

    consumer: str

    def groups_for(self, topic: str) -> Sequence[str]:
        """The consumer groups to read `topic` for now (none while handling is behind)."""

    def take(self, taken: Sequence[tuple[str, BusEvent]]) -> None:
        """Handle the events a publish delivered to this node, each in its group."""


class Events:
    def __init__(self, store: Store, limit: PayloadLimit, local: LocalConsumers | None = None) -> None:
        self.store = store
        self.limit = limit
        self.local = local
        self.published = 0

    def open_publish_stream(self) -> None:
        """Before a stream of publishes (PublishEvents) is read: each publish on it is `publish`,
        checked as such too."""
        allowed("EventService/PublishEvents")

    async def publish(self, topic: str, payload: dict[str, Any], key: str = "") -> str:
        """Publish an event; its id."""
        allowed("EventService/PublishEvent")
        stored = _topic(topic)
        if len(key) > MAX_KEY_LENGTH:
            raise InvalidArgument(f"key is longer than {MAX_KEY_LENGTH} characters")
        payload_json = encode(payload, "event payload")
        self.limit.check("event payload", payload_json)
        local = self.local
        take = local.groups_for(stored) if local is not None else ()
        # what the append took is handled at once, even if the publish is then refused (not
        # confirmed by replicas) or its caller goes: those events are this node's consumer's now
        event_id = await self.store.publish_event(stored, payload_json, key, now_ms(), take,
                                                  local.consumer if local is not None else "",
                                                  on_taken=local.take if local is not None and take else None)
        self.published += 1
        return event_id

    async def read(self, topic: str, after: str = "", limit: int = 0) -> list[BusEvent]:
        """Up to `limit` (0: 100) events of the topic after event id `after` ("": from the oldest kept)."""
        allowed("EventService/ReadEvents")
        stored = _topic(topic)
        if not 0 <= limit <= MAX_READ:
            raise InvalidArgument(f"limit must be 0 (100) to {MAX_READ}")
        if after and not is_event_id(after):
            raise InvalidArgument("after must be an event id ('<ms>-<n>') or empty")
        return await self.store.read_events(stored, after, limit or 100)

    async def configure_topic(self, topic: str, max_len: int, max_age_s: int) -> Topic:
        allowed("EventService/ConfigureTopic")
        stored = _topic(topic)
        if not 0 <= max_len <= MAX_TOPIC_LEN:
            raise InvalidArgument(f"max_len must be 0 (the default) to {MAX_TOPIC_LEN}")
        if not 0 <= max_age_s <= MAX_DURATION_SECONDS:
            raise InvalidArgument(f"max_age_s must be 0 (no age limit) to {MAX_DURATION_SECONDS} seconds")
        return Topic(relative(stored), await self.store.configure_topic(stored, max_len, max_age_s))

    async def topic(self, topic: str) -> Topic:
        allowed("EventService/GetTopic")
        stored = _topic(topic)
        return Topic(relative(stored), await self.store.topic_info(stored))

    async def receive(self, asked: Receive) -> list[BusEvent]:
        """Events taken over from consumers that did not acknowledge them in time first (those
        delivered `max_deliveries` times go to the dead-letter topic instead), else new ones,
        waiting up to `wait_ms` for them."""
        allowed("EventService/ReceiveEvents")
        topic, group = _topic(asked.topic), subscription_group(asked.group)
        consumer = asked.consumer or "consumer"
        if len(consumer) > MAX_KEY_LENGTH:
            raise InvalidArgument(f"consumer is longer than {MAX_KEY_LENGTH} characters")
        count = asked.max_events or 16
        for name, value, high in (("max_events", count, MAX_RECEIVE), ("wait_ms", asked.wait_ms, MAX_WAIT_MS),
                                  ("redeliver_after_ms", asked.redeliver_after_ms, 86_400_000),
                                  ("max_deliveries", asked.max_deliveries, 1000)):
            if not 0 <= value <= high:
                raise InvalidArgument(f"{name} must be from 0 to {high}")
        await self.store.ensure_group(topic, group)
        _, events = await self.store.claim_events(
            group, topic, consumer, asked.redeliver_after_ms or 30_000, count,
            asked.max_deliveries or DEFAULT_MAX_DELIVERIES, "0-0", now_ms())
        if not events:
            events = await self.store.receive_events(group, topic, consumer, count, asked.wait_ms)
        return events

    async def ack(self, topic: str, group: str, event_ids: list[str]) -> int:
        """Acknowledge events a subscription received; how many."""
        allowed("EventService/AckEvents")
        stored, group = _topic(topic), subscription_group(group)
        if len(event_ids) > MAX_RECEIVE * 4 or not all(is_event_id(e) for e in event_ids):
            raise InvalidArgument(f"event_ids: at most {MAX_RECEIVE * 4} ids of the form '<ms>-<n>'")
        await self.store.ack_events(group, stored, event_ids)
        return len(event_ids)

    async def register_handler(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Register (or replace) an event handler; it as the caller sees it."""
        allowed("EventService/RegisterEventHandler")
        require_text_keys(raw, "definition")
        handler = normalise_handler(raw)
        self.limit.check("event handler", encode(handler, "event handler"))
        namespace = request_namespace()   # its name and topic are its namespace's (cluster/events.py acts so)
        stored = {**handler, "name": qualified(namespace, handler["name"]),
                  "event": topic_in(namespace, handler["event"])}
        await self.store.put_event_handler(stored)
        return handler_as_seen(stored)

    async def handlers(self, topic: str = "") -> list[dict[str, Any]]:
        """The caller's namespace's event handlers (of `topic` only, if given)."""
        allowed("EventService/ListEventHandlers")
        namespace = request_namespace()
        return [handler_as_seen(h) for h in await self.store.event_handlers() if namespace_of(h["name"]) == namespace
                and (not topic or relative(h["event"]) == topic)]

    async def remove_handler(self, name: str) -> bool:
        allowed("EventService/RemoveEventHandler")
        if not name:
            raise InvalidArgument("name is required")
        return await self.store.remove_event_handler(qualified(request_namespace(), name))

"""EventService: the event bus (publish, read, retention) and the event handlers that consume it.

Topics belong to namespaces as names do (core/namespaces.py): a caller publishes to, reads and
subscribes to its own namespace's `orders`. So do event handlers: one registered in a namespace
consumes that namespace's topic and acts on its workflows and topics only."""

from __future__ import annotations

import json
from typing import Any

from orchestrator_api.structs import from_struct, to_struct
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

from ..core.clock import now_ms
from ..core.errors import InvalidArgument
from ..core.namespaces import namespace_of, qualified, relative, topic_in
from ..core.events import DEFAULT_MAX_DELIVERIES, HANDLER_NAME, BusEvent, normalise_handler, topic_name
from ..core.limits import MAX_DURATION_SECONDS
from ..core.payloads import PayloadLimit, encode, require_text_keys
from ..service.access import request_namespace
from ..store import Store
from .auth import guarded
from .errors import grpc_errors

MAX_KEY_LENGTH = 256
MAX_READ = 1000
MAX_TOPIC_LEN = 100_000_000
MAX_RECEIVE = 256
MAX_WAIT_MS = 30_000
SUBSCRIPTION_PREFIX = "sub:"


def event_message(event: BusEvent) -> pb.Event:
    message = pb.Event(event_id=event.event_id, topic=relative(event.topic), key=event.key,
                       published_at_ms=event.published_at_ms, deliveries=event.deliveries)
    payload = json.loads(event.payload_json)
    if isinstance(payload, dict):
        message.payload.CopyFrom(to_struct(payload))
    return message


def _topic(text: str) -> str:
    """The topic `text` names in the caller's namespace, as stored."""
    return topic_in(request_namespace(), topic_name(text))


def _is_event_id(text: str) -> bool:
    return 0 < len(text) <= 64 and all(part.isdigit() for part in text.split("-", 1))


def subscription_group(name: str) -> str:
    """The consumer group of a subscription: prefixed, so it never meets a handler's group."""
    if not HANDLER_NAME.match(name or ""):
        raise InvalidArgument("group must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
    return SUBSCRIPTION_PREFIX + name


def handler_message(handler: dict[str, Any]) -> pb.EventHandler:
    """A stored handler as its namespace sees it."""
    shown = {**handler, "name": relative(handler["name"]), "event": relative(handler["event"])}
    return pb.EventHandler(name=shown["name"], definition=to_struct(shown))


@guarded("EventService")   # each method refuses whom the table does not let call it, whoever calls
class EventService(pb_grpc.EventServiceServicer):
    def __init__(self, store: Store, limit: PayloadLimit) -> None:
        self.store = store
        self.limit = limit
        self.published = 0

    @grpc_errors
    async def PublishEvent(self, request: pb.PublishEventRequest, context: Any) -> pb.PublishEventResponse:
        topic = _topic(request.topic)
        if len(request.key) > MAX_KEY_LENGTH:
            raise InvalidArgument(f"key is longer than {MAX_KEY_LENGTH} characters")
        payload = encode(from_struct(request.payload), "event payload")
        self.limit.check("event payload", payload)
        event_id = await self.store.publish_event(topic, payload, request.key, now_ms())
        self.published += 1
        return pb.PublishEventResponse(event_id=event_id)

    @grpc_errors
    async def ReadEvents(self, request: pb.ReadEventsRequest, context: Any) -> pb.ReadEventsResponse:
        topic = _topic(request.topic)
        if not 0 <= request.limit <= MAX_READ:
            raise InvalidArgument(f"limit must be 0 (100) to {MAX_READ}")
        if request.after and not _is_event_id(request.after):
            raise InvalidArgument("after must be an event id ('<ms>-<n>') or empty")
        events = await self.store.read_events(topic, request.after, request.limit or 100)
        return pb.ReadEventsResponse(events=[event_message(e) for e in events])

    @grpc_errors
    async def ConfigureTopic(self, request: pb.ConfigureTopicRequest, context: Any) -> pb.TopicInfo:
        topic = _topic(request.topic)
        if not 0 <= request.max_len <= MAX_TOPIC_LEN:
            raise InvalidArgument(f"max_len must be 0 (the default) to {MAX_TOPIC_LEN}")
        if not 0 <= request.max_age_s <= MAX_DURATION_SECONDS:
            raise InvalidArgument(f"max_age_s must be 0 (no age limit) to {MAX_DURATION_SECONDS} seconds")
        info = await self.store.configure_topic(topic, request.max_len, request.max_age_s)
        return pb.TopicInfo(topic=relative(topic), max_len=info.max_len, length=info.length, max_age_s=info.max_age_s)

    @grpc_errors
    async def GetTopic(self, request: pb.GetTopicRequest, context: Any) -> pb.TopicInfo:
        topic = _topic(request.topic)
        info = await self.store.topic_info(topic)
        return pb.TopicInfo(topic=relative(topic), max_len=info.max_len, length=info.length, max_age_s=info.max_age_s)

    @grpc_errors
    async def ReceiveEvents(self, request: pb.ReceiveEventsRequest, context: Any) -> pb.ReceiveEventsResponse:
        """Events taken over from consumers that did not acknowledge them in time first (those
        delivered `max_deliveries` times go to the dead-letter topic instead), else new ones,
        waiting up to `wait_ms` for them."""
        topic, group = _topic(request.topic), subscription_group(request.group)
        consumer = request.consumer or "consumer"
        if len(consumer) > MAX_KEY_LENGTH:
            raise InvalidArgument(f"consumer is longer than {MAX_KEY_LENGTH} characters")
        count = request.max_events or 16
        for name, value, high in (("max_events", count, MAX_RECEIVE), ("wait_ms", request.wait_ms, MAX_WAIT_MS),
                                  ("redeliver_after_ms", request.redeliver_after_ms, 86_400_000),
                                  ("max_deliveries", request.max_deliveries, 1000)):
            if not 0 <= value <= high:
                raise InvalidArgument(f"{name} must be from 0 to {high}")
        await self.store.ensure_group(topic, group)
        _, events = await self.store.claim_events(
            group, topic, consumer, request.redeliver_after_ms or 30_000, count,
            request.max_deliveries or DEFAULT_MAX_DELIVERIES, "0-0", now_ms())
        if not events:
            events = await self.store.receive_events(group, topic, consumer, count, request.wait_ms)
        return pb.ReceiveEventsResponse(events=[event_message(e) for e in events])

    @grpc_errors
    async def AckEvents(self, request: pb.AckEventsRequest, context: Any) -> pb.AckEventsResponse:
        topic, group = _topic(request.topic), subscription_group(request.group)
        if len(request.event_ids) > MAX_RECEIVE * 4 or not all(_is_event_id(e) for e in request.event_ids):
            raise InvalidArgument(f"event_ids: at most {MAX_RECEIVE * 4} ids of the form '<ms>-<n>'")
        await self.store.ack_events(group, topic, list(request.event_ids))
        return pb.AckEventsResponse(acknowledged=len(request.event_ids))

    @grpc_errors
    async def RegisterEventHandler(self, request: pb.RegisterEventHandlerRequest, context: Any) -> pb.EventHandler:
        raw = from_struct(request.definition)
        require_text_keys(raw, "definition")
        handler = normalise_handler(raw)
        self.limit.check("event handler", encode(handler, "event handler"))
        namespace = request_namespace()   # its name and topic are its namespace's (cluster/events.py acts so)
        stored = {**handler, "name": qualified(namespace, handler["name"]),
                  "event": topic_in(namespace, handler["event"])}
        await self.store.put_event_handler(stored)
        return handler_message(stored)

    @grpc_errors
    async def ListEventHandlers(self, request: pb.ListEventHandlersRequest,
                                context: Any) -> pb.ListEventHandlersResponse:
        namespace = request_namespace()
        handlers = [h for h in await self.store.event_handlers() if namespace_of(h["name"]) == namespace
                    and (not request.topic or relative(h["event"]) == request.topic)]
        return pb.ListEventHandlersResponse(handlers=[handler_message(h) for h in handlers])

    @grpc_errors
    async def RemoveEventHandler(self, request: pb.RemoveEventHandlerRequest,
                                 context: Any) -> pb.RemoveEventHandlerResponse:
        if not request.name:
            raise InvalidArgument("name is required")
        removed = await self.store.remove_event_handler(qualified(request_namespace(), request.name))
        return pb.RemoveEventHandlerResponse(removed=removed)

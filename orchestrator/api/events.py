"""EventService: the gRPC door to the event bus and its handlers (service/events.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc

from orchestrator_api.structs import from_struct, to_struct
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

from ..core.events import BusEvent
from ..core.namespaces import relative
from ..service.events import SUBSCRIPTION_PREFIX, Events, Receive, Topic, subscription_group
from .errors import grpc_errors
from .item_streams import ItemStreams

__all__ = ["SUBSCRIPTION_PREFIX", "EventService", "event_message", "subscription_group"]


def event_message(event: BusEvent) -> pb.Event:
    message = pb.Event(event_id=event.event_id, topic=relative(event.topic), key=event.key,
                       published_at_ms=event.published_at_ms, deliveries=event.deliveries)
    payload = json.loads(event.payload_json)
    if isinstance(payload, dict):
        message.payload.CopyFrom(to_struct(payload))
    return message


def handler_message(handler: dict[str, Any]) -> pb.EventHandler:
    """A handler as its namespace sees it."""
    return pb.EventHandler(name=handler["name"], definition=to_struct(handler))


def topic_message(topic: Topic) -> pb.TopicInfo:
    info = topic.info
    return pb.TopicInfo(topic=topic.name, max_len=info.max_len, length=info.length, max_age_s=info.max_age_s)


class EventService(pb_grpc.EventServiceServicer):
    def __init__(self, events: Events, streams: ItemStreams) -> None:
        self.events = events
        self.streams = streams

    @grpc_errors
    async def PublishEvent(self, request: pb.PublishEventRequest, context: Any) -> pb.PublishEventResponse:
        event_id = await self.events.publish(request.topic, from_struct(request.payload), request.key)
        return pb.PublishEventResponse(event_id=event_id)

    async def PublishEvents(self, requests: AsyncIterator[pb.PublishEventsRequest],
                            context: grpc.aio.ServicerContext) -> AsyncIterator[pb.PublishEventsResponse]:
        """Each publish of the stream as PublishEvent, answered by its id as it is done (item_streams.py)."""
        async def publish(item: pb.PublishItem) -> pb.PublishedItem:
            event = item.event
            return pb.PublishedItem(id=item.id, event_id=await self.events.publish(
                event.topic, from_struct(event.payload), event.key))

        async for answers in self.streams.answer_each(
                requests, context, check=self.events.open_publish_stream, items=lambda message: message.events,
                do=publish,
                failed=lambda item, code, text: pb.PublishedItem(id=item.id, code=code.value[0], message=text),
                message=lambda published: pb.PublishEventsResponse(published=published), what="PublishEvents"):
            yield answers

    @grpc_errors
    async def ReadEvents(self, request: pb.ReadEventsRequest, context: Any) -> pb.ReadEventsResponse:
        events = await self.events.read(request.topic, request.after, request.limit)
        return pb.ReadEventsResponse(events=[event_message(e) for e in events])

    @grpc_errors
    async def ConfigureTopic(self, request: pb.ConfigureTopicRequest, context: Any) -> pb.TopicInfo:
        return topic_message(await self.events.configure_topic(request.topic, request.max_len, request.max_age_s))

    @grpc_errors
    async def GetTopic(self, request: pb.GetTopicRequest, context: Any) -> pb.TopicInfo:
        return topic_message(await self.events.topic(request.topic))

    @grpc_errors
    async def ReceiveEvents(self, request: pb.ReceiveEventsRequest, context: Any) -> pb.ReceiveEventsResponse:
        events = await self.events.receive(Receive(
            topic=request.topic, group=request.group, consumer=request.consumer, max_events=request.max_events,
            wait_ms=request.wait_ms, redeliver_after_ms=request.redeliver_after_ms,
            max_deliveries=request.max_deliveries))
        return pb.ReceiveEventsResponse(events=[event_message(e) for e in events])

    @grpc_errors
    async def AckEvents(self, request: pb.AckEventsRequest, context: Any) -> pb.AckEventsResponse:
        acknowledged = await self.events.ack(request.topic, request.group, list(request.event_ids))
        return pb.AckEventsResponse(acknowledged=acknowledged)

    @grpc_errors
    async def RegisterEventHandler(self, request: pb.RegisterEventHandlerRequest, context: Any) -> pb.EventHandler:
        return handler_message(await self.events.register_handler(from_struct(request.definition)))

    @grpc_errors
    async def ListEventHandlers(self, request: pb.ListEventHandlersRequest,
                                context: Any) -> pb.ListEventHandlersResponse:
        handlers = await self.events.handlers(request.topic)
        return pb.ListEventHandlersResponse(handlers=[handler_message(h) for h in handlers])

    @grpc_errors
    async def RemoveEventHandler(self, request: pb.RemoveEventHandlerRequest,
                                 context: Any) -> pb.RemoveEventHandlerResponse:
        return pb.RemoveEventHandlerResponse(removed=await self.events.remove_handler(request.name))

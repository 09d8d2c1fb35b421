"""`orchestrator event|handler ...`: the event bus from the command line (publish, read, topics, handlers)."""

from __future__ import annotations

import argparse
from typing import Any

from ..command import add, group
from ..inputs import json_arg, read_all_documents
from ..views.events import events_view


def add_event_commands(commands: Any) -> None:
    events = group(commands, "event", "the event bus: topics, events, handlers")
    publish = add(events, "publish", "publish an event on a topic; prints its id", _publish)
    publish.add_argument("topic", help="the topic, e.g. orders.created")
    publish.add_argument("--payload", default="{}", help="the event as a JSON object, or @file.json")
    publish.add_argument("--key", default="", help="a key handlers and waiting tasks can match on")
    read = add(events, "read", "the events a topic keeps, oldest first", _read, view=events_view)
    read.add_argument("topic", help="the topic to read")
    read.add_argument("--after", default="", help="only events after this event id")
    read.add_argument("--limit", type=int, default=100, help="at most this many (1 to 1000)")
    topic = add(events, "topic", "a topic's retention and length; with --max-len or --max-age, set the retention",
                _topic)
    topic.add_argument("topic", help="the topic")
    topic.add_argument("--max-len", type=int, default=None, help="keep at most this many events (0: the default)")
    topic.add_argument("--max-age", type=int, default=None, metavar="SECONDS",
                       help="drop events older than this many seconds (0: no age limit)")
    handlers = group(commands, "handler", "event handlers (Conductor's shape: name, event, condition, actions)")
    add(handlers, "register", "register event handlers from JSON/YAML files (one object or a list)",
        lambda c, a: [c.register_event_handler(h) for h in read_all_documents(a.files)], files=True)
    listed = add(handlers, "list", "the registered handlers", lambda c, a: c.list_event_handlers(a.topic))
    listed.add_argument("--topic", default="", help="only the handlers of this topic")
    removed = add(handlers, "remove", "remove a handler (its consumer group goes with it)",
                  lambda c, a: {"removed": c.remove_event_handler(a.handler_name)})
    removed.add_argument("handler_name", metavar="name", help="the handler's name")


def _publish(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    event_id = client.publish_event(args.topic, json_arg("--payload", args.payload), key=args.key)
    return {"topic": args.topic, "event_id": event_id}


def _read(client: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    return list(client.read_events(args.topic, after=args.after, limit=args.limit))


def _topic(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    if args.max_len is None and args.max_age is None:
        return dict(client.get_topic(args.topic))
    return dict(client.configure_topic(args.topic, max_len=args.max_len or 0, max_age_s=args.max_age or 0))

"""Event handlers (choreography): what a handler is, and what it does with one event. Pure.

A handler (Conductor's shape) names a topic (`event`), an optional `condition` (a safe
expression, `orchestrator.core.safe_expr`) and a list of `actions`: `start_workflow`,
`complete_task`, `fail_task`, `terminate_workflow`, `publish`. Conditions and action
parameters see one root value, `$`:

    {"payload": <the event's payload>, "eventId": "<id>", "topic": "<topic>", "key": "<key>"}

An action parameter that is a string written exactly `${<safe expression>}` is replaced by
the expression's value (types kept: `"${$.payload.amount}"` stays a number); every other value
is taken as written, in nested objects and lists too. Conditions and every such expression
are compiled at registration, so a syntax error is refused there (INVALID_ARGUMENT).

A handler may name a topic nobody has published to yet: topics exist from their first event
(or the first handler), so subscribers and publishers can be deployed in any order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument
from .safe_expr import SafeExpressionError, compile_expression, evaluate

TOPIC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}\Z")
HANDLER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}\Z")
DEAD_LETTER_TOPIC = "deadletter"
"""Where an event goes that a handler could not handle: its payload is
`{handler, topic, eventId, payload, key, reason, deliveries}`."""
CONDUCTOR_PREFIX = "conductor:"
ACTIONS = ("start_workflow", "complete_task", "fail_task", "terminate_workflow", "publish")
MAX_ACTIONS = 16
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_REDELIVER_AFTER_S = 30.0
_EXPRESSION = re.compile(r"^\$\{(.*)\}$", re.DOTALL)


def is_foreign_sink(sink: str) -> bool:
    """An EVENT sink of another broker (`sqs:queue`, `kafka:topic`): not this bus."""
    prefix, sep, _ = sink.partition(":")
    return bool(sep) and prefix + sep != CONDUCTOR_PREFIX


def topic_name(text: Any, what: str = "topic") -> str:
    """A topic as written (`orders`, or Conductor's `conductor:orders`); InvalidArgument otherwise."""
    if isinstance(text, str) and text.startswith(CONDUCTOR_PREFIX):
        text = text[len(CONDUCTOR_PREFIX):]
    if not isinstance(text, str) or not TOPIC.fullmatch(text):
        raise InvalidArgument(f"{what} must be 1-128 characters of letters, digits, '_', '.' and '-' (not "
                              f"starting with '.' or '-'), optionally after 'conductor:'; got {str(text)[:80]!r}")
    return text


def _expressions(value: Any, where: str) -> None:
    """Compile every `${...}` parameter, so a bad one is refused at registration."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            match = _EXPRESSION.fullmatch(item)
            if match:
                try:
                    compile_expression(match.group(1))
                except SafeExpressionError as exc:
                    raise InvalidArgument(f"{at}: {exc}") from None
        elif isinstance(item, dict):
            stack.extend((v, f"{at}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))


_REQUIRED: dict[str, tuple[str, ...]] = {
    "start_workflow": ("name",), "complete_task": ("workflowId", "taskRefName"),
    "fail_task": ("workflowId", "taskRefName"), "terminate_workflow": ("workflowId",), "publish": ("topic",),
}


def normalise_handler(raw: Any) -> dict[str, Any]:
    """The handler with its defaults, or InvalidArgument naming what to fix."""
    if not isinstance(raw, dict):
        raise InvalidArgument("an event handler is a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not HANDLER_NAME.fullmatch(name):
        raise InvalidArgument("name must be 1-128 characters of letters, digits, '_', '.' and '-'")
    topic = topic_name(raw.get("event"), "event (the topic)")
    condition = raw.get("condition", "")
    if condition is None:
        condition = ""
    if not isinstance(condition, str):
        raise InvalidArgument("condition must be a safe expression (text), e.g. \"$.payload.status == 'PAID'\"")
    if condition.strip():
        try:
            compile_expression(condition)
        except SafeExpressionError as exc:
            raise InvalidArgument(f"condition: {exc}") from None
    actions = raw.get("actions")
    if not isinstance(actions, list) or not actions or len(actions) > MAX_ACTIONS:
        raise InvalidArgument(f"actions must be a list of 1 to {MAX_ACTIONS} actions")
    normalised = []
    for i, action in enumerate(actions):
        where = f"actions[{i}]"
        kind = action.get("action") if isinstance(action, dict) else None
        if kind not in ACTIONS:
            raise InvalidArgument(f"{where}.action must be one of {', '.join(ACTIONS)}")
        assert isinstance(action, dict) and isinstance(kind, str)
        params = action.get(kind)
        if not isinstance(params, dict):
            raise InvalidArgument(f"{where}.{kind} must be an object of the action's parameters")
        missing = [field for field in _REQUIRED[kind] if field not in params]
        if missing:
            raise InvalidArgument(f"{where}.{kind} needs {', '.join(missing)}")
        if kind == "publish" and not _EXPRESSION.fullmatch(str(params["topic"])):
            topic_name(params["topic"], f"{where}.publish.topic")
        _expressions(params, f"{where}.{kind}")
        normalised.append({"action": kind, kind: params})
    active = raw.get("active", True)
    deliveries = raw.get("maxDeliveries", DEFAULT_MAX_DELIVERIES)
    redeliver = raw.get("redeliverAfterSeconds", DEFAULT_REDELIVER_AFTER_S)
    if not isinstance(active, bool):
        raise InvalidArgument("active must be true or false")
    if isinstance(deliveries, bool) or not isinstance(deliveries, int) or not 1 <= deliveries <= 100:
        raise InvalidArgument("maxDeliveries must be a whole number from 1 to 100")
    if isinstance(redeliver, bool) or not isinstance(redeliver, int | float) or not 0.1 <= redeliver <= 86400:
        raise InvalidArgument("redeliverAfterSeconds must be a number from 0.1 to 86400")
    return {"name": name, "event": topic, "condition": condition, "actions": normalised, "active": active,
            "maxDeliveries": deliveries, "redeliverAfterSeconds": float(redeliver)}


@dataclass(frozen=True)
class BusEvent:
    event_id: str
    topic: str
    payload_json: str
    key: str
    published_at_ms: int
    deliveries: int = 1


def scope(event_id: str, topic: str, payload: Any, key: str) -> dict[str, Any]:
    return {"payload": payload, "eventId": event_id, "topic": topic, "key": key}


def matches(handler: dict[str, Any], root: dict[str, Any]) -> bool:
    """Whether the handler's condition holds for the event; SafeExpressionError on a run-time error."""
    condition = handler.get("condition") or ""
    return not condition.strip() or bool(evaluate(condition, root))


def resolve(value: Any, root: dict[str, Any]) -> Any:
    """Action parameters with every `${...}` replaced by its value (SafeExpressionError on failure)."""
    if isinstance(value, str):
        match = _EXPRESSION.fullmatch(value)
        return evaluate(match.group(1), root) if match else value
    if isinstance(value, dict):
        return {k: resolve(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, root) for v in value]
    return value

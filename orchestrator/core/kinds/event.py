"""EVENT: publish the resolved inputParameters to the topic `sink` names (`orders` or
`conductor:orders`) on the cluster's own event bus, in the same atomic write that completes the
task (so it is published exactly once per completed attempt); output `{"topic": ...,
"published": true}`. A sink of another broker (`sqs:...`, `kafka:...`) is left to workers that
serve task type EVENT."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ..events import is_foreign_sink, topic_name
from ..payloads import encode
from ..schema import WorkflowTask
from .base import Checker, Kind, Outcome
from .steps import instant, run_on_worker

if TYPE_CHECKING:
    from ..decider.walk import Walk


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
    sink = task.get("sink")
    if isinstance(sink, str) and is_foreign_sink(sink):
        checker.warn(f"{where}: sink '{sink[:80]}' is not this cluster's event bus: the task runs on a worker that "
                     "serves task type 'EVENT'")
        out["sink"] = sink
        return
    try:
        out["sink"] = topic_name(sink, f"{where}: 'sink'")
    except InvalidArgument as exc:
        checker.problems.append(str(exc))


def decide(walk: Walk, node: WorkflowTask, suffix: str, previous: WorkflowTask | None) -> Outcome:
    sink = node.get("sink")
    if isinstance(sink, str) and is_foreign_sink(sink):
        return run_on_worker(walk, node, suffix, previous)   # another broker's sink: a worker of type EVENT
    published: list[tuple[str, str]] = []

    def compute(inputs: dict[str, Any]) -> dict[str, Any]:
        try:
            topic = topic_name(node.get("sink"), "'sink'")
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        try:
            published.append((walk.topic_in(topic), encode(inputs, "the event payload")))
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        return {"topic": topic, "published": True}

    outcome, _ = instant(walk, node, suffix, compute)
    walk.decision.publish.extend(published)
    return outcome


KIND = Kind(names=("EVENT",), role="system", fields=frozenset({"sink"}), validate=validate, decide=decide,
            also_on_workers=True)

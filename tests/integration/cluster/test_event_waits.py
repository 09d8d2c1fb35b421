"""A WAIT task that waits for an event: `inputParameters.event` names the topic; the event's
key (or `payload.workflowId`) names the workflow by id, or the key is its correlation id.
One real node; the events go through the bus and the node's `wait:<topic>` consumer."""

from __future__ import annotations

from typing import Any

import pytest

from assertions import wait_until_topic_handled, wait_until_waiting
from helpers import unique, wait_for_status
from worker import ClientError


def waiting_workflow(client: Any, topic: str) -> str:
    name = unique("awaits")
    client.register_workflow_def({
        "name": name, "schemaVersion": 2,
        "tasks": [{"name": "settled", "taskReferenceName": "settled", "type": "WAIT",
                   "inputParameters": {"event": topic}},
                  {"name": "note", "taskReferenceName": "note", "type": "SET_VARIABLE",
                   "inputParameters": {"amount": "${settled.output.payload.amount}"}}],
        "outputParameters": {"amount": "${workflow.variables.amount}", "event": "${settled.output.eventId}"}})
    return name


def test_an_event_keyed_by_the_correlation_id_completes_the_waiting_step(node: Any) -> None:
    topic = unique("payments.settled")
    name = waiting_workflow(node.client, topic)
    order = unique("order")
    workflow_id = node.client.start_workflow(name, {}, correlation_id=order)
    other_order = unique("order")
    other = node.client.start_workflow(name, {}, correlation_id=other_order)
    wait_until_waiting(node.client, workflow_id)
    wait_until_waiting(node.client, other)
    event_id = node.client.publish_event(topic, {"amount": 42}, key=order)
    done = wait_for_status(node.client, workflow_id, "COMPLETED")
    assert done["output"] == {"amount": 42, "event": event_id}
    node.client.publish_event(topic, {"amount": 99}, key=order)   # a repeat: the step is done already
    wait_until_topic_handled(node.client, topic, name)             # the repeat, too
    again = node.client.get_workflow(workflow_id)
    assert again["output"] == {"amount": 42, "event": event_id}
    assert [t["status"] for t in again["tasks"] if t["reference_name"] == "settled"] == ["COMPLETED"]
    assert node.client.get_workflow(other, include_tasks=False)["status"] == "RUNNING"   # not its key
    # its own key completes it, with its own event (not one of the two before)
    own = node.client.publish_event(topic, {"amount": 7}, key=other_order)
    assert wait_for_status(node.client, other, "COMPLETED")["output"] == {"amount": 7, "event": own}


def test_an_event_naming_the_workflow_id_completes_it_and_an_early_event_is_not_kept(node: Any) -> None:
    topic = unique("shipments")
    name = waiting_workflow(node.client, topic)
    order = unique("order")
    node.client.publish_event(topic, {"amount": 1}, key=order)   # dropped: nobody waits for it yet
    wait_until_topic_handled(node.client, topic, name)
    early = node.client.start_workflow(name, {}, correlation_id=order)   # the early event was for it
    first = node.client.start_workflow(name, {})
    by_key = node.client.start_workflow(name, {})
    for workflow_id in (early, first, by_key):
        wait_until_waiting(node.client, workflow_id)
    node.client.publish_event(topic, {"amount": 2, "workflowId": first})
    node.client.publish_event(topic, {"amount": 3}, key=by_key)
    node.client.publish_event(topic, {"amount": 4}, key=order)
    assert wait_for_status(node.client, first, "COMPLETED")["output"]["amount"] == 2
    assert wait_for_status(node.client, by_key, "COMPLETED")["output"]["amount"] == 3
    assert wait_for_status(node.client, early, "COMPLETED")["output"]["amount"] == 4   # not the early 1


@pytest.mark.parametrize("task,words", [
    ({"type": "WAIT", "inputParameters": {"event": "${workflow.input.topic}"}}, "a literal topic"),
    ({"type": "WAIT", "inputParameters": {"event": "payments", "duration": "10s"}}, "not both"),
    ({"type": "WAIT", "duration": 5, "inputParameters": {"event": "payments"}}, "not both"),
])
def test_an_event_wait_that_cannot_work_is_refused_at_registration(node: Any, task: dict[str, Any],
                                                                   words: str) -> None:
    name = unique("bad_wait")
    with pytest.raises(ClientError) as refused:
        node.client.register_workflow_def({"name": name, "tasks": [{"name": "w", "taskReferenceName": "w", **task}]})
    assert refused.value.code == "INVALID_ARGUMENT" and words in str(refused.value)

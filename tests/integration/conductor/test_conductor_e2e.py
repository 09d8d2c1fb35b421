"""Conductor's ways of naming what to start, on a real node: a sub-workflow named by the input,
an inline sub-workflow definition, and a definition that says it may not be restarted."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import unique
from worker import ClientError


def test_a_sub_workflow_named_by_the_input_and_an_inline_one_run(node: Any) -> None:
    client = node.client
    child, parent = unique("named_child"), unique("by_input")
    client.register_workflow_def({"name": child, "tasks": [
        {"name": "set", "taskReferenceName": "set", "type": "SET_VARIABLE", "inputParameters": {"done": True}}],
        "outputParameters": {"from": "named"}})
    client.register_workflow_def({"name": parent, "schemaVersion": 2, "tasks": [
        {"name": "named", "taskReferenceName": "named", "type": "SUB_WORKFLOW",
         "subWorkflowParam": {"name": "${workflow.input.which}"}},
        {"name": "inline", "taskReferenceName": "inline", "type": "SUB_WORKFLOW",
         "subWorkflowParam": {"name": "inline_child", "workflowDefinition": {
             "name": "inline_child", "tasks": [{"name": "noop", "taskReferenceName": "n", "type": "NOOP"}],
             "outputParameters": {"from": "inline"}}}}],
        "outputParameters": {"named": "${named.output.from}", "inline": "${inline.output.from}"}})
    done = client.execute_workflow(parent, {"which": child}, wait_s=20)
    assert done["status"] == "COMPLETED", done
    assert done["output"] == {"named": "named", "inline": "inline"}


def test_restart_is_refused_when_the_definition_says_restartable_false(node: Any) -> None:
    client = node.client
    name = unique("once")
    client.register_workflow_def({"name": name, "restartable": False, "tasks": [
        {"name": "noop", "taskReferenceName": "n", "type": "NOOP"}]})
    done = client.execute_workflow(name, {}, wait_s=20)
    assert done["status"] == "COMPLETED"
    with pytest.raises(ClientError) as refused:
        client.restart_workflow(done["workflow_id"])
    assert refused.value.code == "FAILED_PRECONDITION" and "restartable: false" in str(refused.value)

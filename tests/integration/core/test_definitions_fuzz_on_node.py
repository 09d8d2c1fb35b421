"""The validator's answer on a real node (issue 22 item 12): a SWITCH whose `expression` was a
list, a FORK_JOIN_DYNAMIC whose `dynamicForkTasksParam` was a list and a lone surrogate in
`description` were answered INTERNAL. Through gRPC (RegisterWorkflowDef, as a Struct and as a
document) and REST they are INVALID_ARGUMENT / 400 and nothing is stored. The validator itself,
on every definition: tests/unit/core/test_definitions_fuzz.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from helpers import unique
from worker import ClientError


def t(ref: str, kind: str = "SIMPLE", name: str = "fetch", **fields: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "type": kind, **fields}


ISSUE_CASES = {
    "switch-expression-list": lambda name: {"name": name, "tasks": [
        t("s", "SWITCH", expression=["a"], decisionCases={"a": [t("n", "NOOP")]})]},
    "fork-param-list": lambda name: {"name": name, "tasks": [
        t("f", "FORK_JOIN_DYNAMIC", dynamicForkTasksParam=["a"], dynamicForkTasksInputParamName="b",
          inputParameters={"b": 1}), t("j", "JOIN")]},
    "description-surrogate": lambda name: {"name": name, "description": "\ud800", "tasks": [t("n", "NOOP")]},
    # found by the property of the unit tests: names the node looks up in Redis before it checks a definition
    "sub-workflow-name-surrogate": lambda name: {"name": name, "tasks": [
        t("s", "SUB_WORKFLOW", subWorkflowParam={"name": "a\udc00"})]},
}


def _nothing_stored(node: Any, name: str) -> None:
    with pytest.raises(ClientError) as missing:
        node.client.get_workflow_def(name)
    assert missing.value.code == "NOT_FOUND"


@pytest.mark.parametrize("case", sorted(ISSUE_CASES))
def test_on_a_node_the_issues_cases_are_invalid_argument_and_nothing_is_stored(node: Any, case: str) -> None:
    # gRPC, the definition as JSON text (a Struct cannot carry a lone surrogate: protobuf refuses it
    # on the client), and as a Struct where it can be one
    name = unique("fuzz_grpc")
    document = json.dumps(ISSUE_CASES[case](name))
    with pytest.raises(ClientError) as refused:
        node.client.register_workflow_def(document)
    assert refused.value.code == "INVALID_ARGUMENT", refused.value
    if "surrogate" not in case:
        with pytest.raises(ClientError) as refused:
            node.client.register_workflow_def(ISSUE_CASES[case](name))
        assert refused.value.code == "INVALID_ARGUMENT", refused.value
    _nothing_stored(node, name)
    # REST (Conductor's API): 400
    name = unique("fuzz_rest")
    with httpx.Client(base_url=f"http://{node.http_address}/api", timeout=15.0) as http:
        for method in ("POST", "PUT"):
            body = ISSUE_CASES[case](name)
            answer = http.request(method, "/metadata/workflow", content=json.dumps(body if method == "POST"
                                                                                   else [body]),
                                  headers={"Content-Type": "application/json"})
            assert answer.status_code == 400, (method, answer.status_code, answer.text)
        assert http.get(f"/metadata/workflow/{name}").status_code == 404
    _nothing_stored(node, name)

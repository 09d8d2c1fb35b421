"""Definition validation and expressions: pure, no servers."""

from __future__ import annotations

import pytest

from orchestrator.core.definitions import (normalise_task_def, normalise_workflow_def, parse_document,
                                      validate_workflow_def)
from orchestrator.core.errors import InvalidArgument
from orchestrator.core.templates import TemplateError, parse_reference, resolve

DEFS = {"fetch": normalise_task_def({"name": "fetch"})}


def workflow(*tasks, **extra):
    return {"name": "wf", "tasks": list(tasks), **extra}


def test_task_def_defaults_are_explicit():
    d = normalise_task_def({"name": "fetch"})
    assert d["retryCount"] == 3 and d["retryLogic"] == "FIXED" and d["responseTimeoutSeconds"] == 60.0


@pytest.mark.parametrize("raw,fragment", [
    ({}, "'name' is required"),
    ({"name": "x", "retryLogic": "RANDOM"}, "'retryLogic' must be one of"),
    ({"name": "x", "retryCount": -1}, "'retryCount' must be an integer from 0"),
    ({"name": "x", "responseTimeoutSeconds": 0}, "'responseTimeoutSeconds' must be a number >= 0.1"),
    ({"name": "x", "colour": "red"}, "unknown field(s) colour"),
])
def test_bad_task_defs_name_the_field(raw, fragment):
    with pytest.raises(InvalidArgument) as err:
        normalise_task_def(raw)
    assert fragment in str(err.value)


def test_every_problem_is_reported_with_its_task_reference():
    _, problems = validate_workflow_def(workflow(
        {"name": "fetch", "taskReferenceName": "a"},
        {"name": "fetch", "taskReferenceName": "a"},
        {"name": "nope", "taskReferenceName": "b"},
        {"name": "fetch", "taskReferenceName": "c", "type": "TELEPORT"},
        {"name": "fetch", "taskReferenceName": "d", "inputParameters": {"x": "${later.output.y}"}},
        {"name": "fetch", "taskReferenceName": "e", "inputParameters": {"x": "${workflow.nothing}"}},
    ), DEFS)
    text = "\n".join(problems)
    assert "task 'a' (tasks[1]): 'taskReferenceName' 'a' is used twice" in text
    assert "task 'b' (tasks[2]): no task definition named 'nope'" in text
    assert "task 'c' (tasks[3]): 'type' 'TELEPORT' is not supported" in text
    assert "task 'd' (tasks[4]): 'inputParameters': '${later...}' names no earlier task reference" in text
    assert "task 'e' (tasks[5]): 'inputParameters'" in text and "workflow." in text


def test_empty_tasks_and_bad_name():
    with pytest.raises(InvalidArgument) as err:
        normalise_workflow_def({"name": "bad name!", "tasks": []}, DEFS)
    assert "'name' is required" in str(err.value) and "tasks: must be a non-empty list" in str(err.value)


def test_yaml_and_json_documents():
    assert parse_document('{"name": "x"}') == {"name": "x"}
    assert parse_document("name: x\ntasks: []\n") == {"name": "x", "tasks": []}
    with pytest.raises(InvalidArgument, match="must be a JSON/YAML object"):
        parse_document("- a\n- b\n")
    with pytest.raises(InvalidArgument, match="neither valid JSON nor valid YAML"):
        parse_document("{unclosed: [")


def test_resolve_keeps_types_interpolates_strings_and_escapes():
    scope = {"workflow": {"input": {"n": 3, "items": [{"sku": "A"}, {"sku": "B"}]}, "workflowId": "w"},
             "t": {"output": {"obj": {"k": 1}}}}
    assert resolve("${workflow.input.n}", scope) == 3
    assert resolve("${workflow.input.items[1].sku}", scope) == "B"
    assert resolve("n=${workflow.input.n}", scope) == "n=3"
    assert resolve("${t.output.obj}", scope) == {"k": 1}
    assert resolve("raw $${workflow.input.n}", scope) == "raw ${workflow.input.n}"
    assert resolve({"a": ["${workflow.workflowId}"]}, scope) == {"a": ["w"]}
    assert resolve("${t.output.missing}", scope) is None
    assert resolve("${workflow.input.items[9].sku}", scope) is None


@pytest.mark.parametrize("text", ["", "workflow", "workflow.secret", "t", "t.status", "a..b", "a.b[x]"])
def test_bad_references(text):
    with pytest.raises(TemplateError):
        parse_reference(text)


@pytest.mark.parametrize("name", ["charge\n", "charge\r\n", "team-a:charge"])
def test_a_name_with_a_trailing_newline_or_a_namespace_separator_is_refused(name):
    """`$` in a pattern also matches before a final newline: `charge\\n` was registered as a task,
    a workflow and a task reference, a key no one could type again."""
    with pytest.raises(InvalidArgument):
        normalise_task_def({"name": name})
    with pytest.raises(InvalidArgument):
        normalise_workflow_def({"name": name, "tasks": [{"name": "x", "taskReferenceName": "x", "type": "NOOP"}]},
                               {})
    with pytest.raises(InvalidArgument):
        normalise_workflow_def({"name": "w", "tasks": [{"name": "x", "taskReferenceName": name, "type": "NOOP"}]},
                               {})


def test_namespaces_topics_and_subscription_groups_refuse_a_trailing_newline():
    from orchestrator.api.events import subscription_group
    from orchestrator.core.auth import Tokens, TokensError
    from orchestrator.core.events import topic_name
    from orchestrator.core.namespaces import checked

    with pytest.raises(ValueError):
        checked("team-a\n")
    with pytest.raises(TokensError):
        Tokens.from_document({"tokens": [{"name": "n", "roles": ["admin"], "namespace": "team-a\n",
                                          "token": "t" * 20}]})
    with pytest.raises(InvalidArgument):
        topic_name("orders\n")
    with pytest.raises(InvalidArgument):
        subscription_group("billing\n")

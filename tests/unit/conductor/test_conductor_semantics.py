"""Conductor's semantics, one by one, decided purely (tests/sim.py): what a Conductor user's
definitions mean here is what they mean in Conductor.

Definitions written the Conductor way declare `schemaVersion: 2` (every export does); that is
what makes a `${...}` naming a task that has not run a warning (it resolves to null) rather
than a registration error, and a DO_WHILE condition without `evaluatorType` JavaScript.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from orchestrator.core import javascript
from orchestrator.core import statuses as st
from orchestrator.core.definitions import (check_task_def, check_workflow_def, needs_every_task_def,
                                           needs_every_workflow_def, normalise_task_def, referenced_task_names,
                                           snapshot_workflow_refs, validate_workflow_def)
from orchestrator.core.errors import InvalidArgument
from orchestrator.core.timetext import parse_duration_seconds, parse_until_ms
from sim import START, Sim, echo, task_defs

DEFS = task_defs("a", "b", "c", "dyn_target", retryCount=0)


def conductor(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A definition as Conductor exports it."""
    return {"name": "cw", "version": 1, "schemaVersion": 2, "tasks": list(tasks), **extra}


def simple(ref: str, name: str = "a", **extra: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "type": "SIMPLE", **extra}


def run(definition: Mapping[str, Any], workflow_input: dict[str, Any] | None = None, handler: Any = echo,
        workflows: dict[str, Any] | None = None) -> Sim:
    sim = Sim(definition, DEFS, workflows)
    sim.start(workflow_input or {})
    sim.run(handler, max_steps=5000)
    return sim


def check(definition: dict[str, Any], workflows: dict[str, Any] | None = None) -> tuple[list[str], list[str]]:
    result = check_workflow_def(definition, DEFS, workflows or {})
    return result.problems, result.warnings


# ================================================================ 1. Conductor's fields are accepted

EXPORTED_TASK_FIELDS = {"decisionCases": {}, "defaultCase": [], "forkTasks": [], "startDelay": 0, "joinOn": [],
                        "optional": False, "defaultExclusiveJoinTask": [], "asyncComplete": False, "loopOver": [],
                        "onStateChange": {}, "permissive": False, "rateLimited": False, "callbackFromWorker": True}


def test_an_exported_definition_with_all_metadata_is_accepted_with_warnings_only() -> None:
    definition = conductor(
        {**simple("t1"), **EXPORTED_TASK_FIELDS, "taskDefinition": {
            "name": "a", "retryCount": 2, "timeoutSeconds": 120, "inputKeys": ["x"], "outputKeys": ["y"],
            "timeoutPolicy": "TIME_OUT_WF", "retryLogic": "FIXED", "retryDelaySeconds": 0,
            "responseTimeoutSeconds": 60, "inputTemplate": {}, "rateLimitPerFrequency": 0,
            "rateLimitFrequencyInSeconds": 1, "pollTimeoutSeconds": 30, "ownerEmail": "x@y.z",
            "concurrentExecLimit": None, "backoffScaleFactor": 1, "createdBy": "me", "totalTimeoutSeconds": 600}},
        description="d", ownerEmail="team@example.com", restartable=True, workflowStatusListenerEnabled=True,
        timeoutPolicy="ALERT_ONLY", timeoutSeconds=0, createTime=1, updateTime=2, createdBy="me", updatedBy="you",
        inputTemplate={"k": "v"}, enforceSchema=True, metadata={"team": "x"}, maskedFields=["secret"],
        variables={}, inputParameters=["k"], outputParameters={}, failureWorkflow="",
        rateLimitConfig={"rateLimitKey": "k", "concurrentExecLimit": 2}, onStateChange={})
    problems, warnings = check(definition)
    assert problems == []
    text = "\n".join(warnings)
    for fragment in ("'workflowStatusListenerEnabled' is kept but has no effect here",
                     "'maskedFields' is kept but has no effect here", "'rateLimitConfig' is kept but has no effect",
                     "'totalTimeoutSeconds' is kept but has no effect",
                     "fields of other task types left at their defaults were dropped: asyncComplete, "
                     "callbackFromWorker, decisionCases, defaultCase, defaultExclusiveJoinTask, forkTasks, joinOn, "
                     "loopOver, onStateChange, permissive, rateLimited"):
        assert fragment in text, text
    # kept and shown back as written (read as a mapping: WorkflowDef does not list the fields kept as written)
    normalised: Mapping[str, Any] = check_workflow_def(definition, DEFS, {}).definition
    assert normalised["ownerEmail"] == "team@example.com" and normalised["metadata"] == {"team": "x"}
    assert normalised["createTime"] == 1 and normalised["maskedFields"] == ["secret"]
    embedded = normalised["tasks"][0]["taskDefinition"]
    assert embedded["retryCount"] == 2 and embedded["inputKeys"] == ["x"] and embedded["concurrentExecLimit"] == 0


def test_the_existing_signature_keeps_working_and_unknown_fields_are_still_errors() -> None:
    _, problems = validate_workflow_def(conductor(simple("t1"), colour="red"), DEFS, {})
    assert problems == ["workflow 'cw': unknown field(s) colour"]
    _, problems = validate_workflow_def(conductor({**simple("t1"), "shade": 1}), DEFS, {})
    assert problems == ["task 't1' (tasks[0]): unknown field(s) shade for type SIMPLE"]


def test_task_definition_fields_of_conductor_are_accepted() -> None:
    definition, problems, warnings = check_task_def({
        "name": "t", "inputKeys": ["a"], "outputKeys": [], "ownerEmail": "a@b.c", "createTime": 1,
        "pollTimeoutSeconds": 5, "concurrentExecLimit": None, "inputTemplate": {"x": 1}, "retryCount": 500,
        "inputSchema": {"type": "object"}})
    assert problems == []
    assert definition["pollTimeoutSeconds"] == 5.0 and definition["inputTemplate"] == {"x": 1}
    assert definition["retryCount"] == 100 and definition["concurrentExecLimit"] == 0
    assert any("'retryCount' 500 is above the limit of 100" in w for w in warnings)
    assert any("'inputSchema' is kept but has no effect" in w for w in warnings)
    with pytest.raises(InvalidArgument, match="unknown field"):
        normalise_task_def({"name": "t", "colour": "red"})


def test_a_set_field_that_has_no_meaning_for_the_type_is_a_warning() -> None:
    problems, warnings = check(conductor(
        {"name": "f", "taskReferenceName": "f", "type": "FORK_JOIN", "forkTasks": [[simple("x")]],
         "joinOn": ["x"]}, {"name": "j", "taskReferenceName": "j", "type": "JOIN", "joinOn": ["x"]},
        {**simple("p"), "permissive": True, "onStateChange": {"onSuccess": [{"type": "e"}]}}))
    assert problems == []
    text = "\n".join(warnings)
    assert "task 'f' (tasks[0]): 'joinOn' is ignored: it has no meaning for a FORK_JOIN task" in text
    assert "'permissive' is ignored" in text and "'onStateChange' is ignored" in text


def test_schema_version_1_is_refused_as_conductor_refuses_it() -> None:
    problems, _ = check({**conductor(simple("t1")), "schemaVersion": 1})
    assert problems and "'schemaVersion' must be 2" in problems[0]


def test_an_unsupported_type_is_an_error_naming_it() -> None:
    problems, _ = check(conductor({"name": "x", "taskReferenceName": "x", "type": "TELEPORT",
                                   "decisionCases": {"a": []}}))
    assert len(problems) == 1 and "'type' 'TELEPORT' is not supported" in problems[0]
    assert "NOOP" not in problems[0].split("use one of")[0]


def test_a_custom_type_with_a_task_definition_runs_on_its_workers() -> None:
    defs = {**DEFS, "USER_TASK": normalise_task_def({"name": "USER_TASK", "retryCount": 0})}
    definition = conductor({"name": "u", "taskReferenceName": "u", "type": "USER_TASK"})
    result = check_workflow_def(definition, defs, {})
    assert result.problems == [] and any("not one of Conductor's" in w for w in result.warnings)
    assert "USER_TASK" in referenced_task_names(definition)
    sim = Sim(definition, defs)
    sim.start()
    assert sim.run().status == st.COMPLETED and sim.task("u").spec.task_type == "USER_TASK"


def test_in_a_conductor_definition_a_custom_type_runs_under_the_tasks_own_definition() -> None:
    definition = conductor({"name": "a", "taskReferenceName": "u", "type": "MY_TYPE"})   # "a" is registered
    problems, warnings = check(definition)
    assert problems == [] and any("under the task definition 'a'" in w for w in warnings)
    assert needs_every_task_def(definition)   # the node finds 'a' among all task definitions
    sim = run(definition)
    assert sim.workflows["wf"].status == st.COMPLETED and sim.task("u").spec.task_type == "MY_TYPE"
    problems, _ = check({"name": "ours", "tasks": [{"name": "a", "taskReferenceName": "u", "type": "MY_TYPE"}]})
    assert problems and "'type' 'MY_TYPE' is not supported" in problems[0]


def test_a_reference_to_a_task_that_has_not_run_is_null_for_conductor_and_an_error_otherwise() -> None:
    problems, warnings = check(conductor(simple("t1", inputParameters={"x": "${ghost.output.y}"})))
    assert problems == [] and any("'${ghost...}' is no task of this workflow; it resolves to null" in w
                                  for w in warnings)
    sim = run(conductor(simple("t1", inputParameters={"x": "${ghost.output.y}"})))
    assert sim.task("t1").spec.input == {"x": None}
    problems, _ = check({"name": "ours", "tasks": [simple("t1", inputParameters={"x": "${ghost.output.y}"})]})
    assert problems == ["task 't1' (tasks[0]): 'inputParameters': '${ghost...}' names no earlier task reference"]


def test_timeout_without_policy_warns_of_the_different_default() -> None:
    _, warnings = check(conductor(simple("t1"), timeoutSeconds=60))
    assert any("Conductor's default is ALERT_ONLY" in w for w in warnings)


# ================================================================ 2. semantics we differed on

def test_terminate_reads_status_reason_and_output_from_input_parameters() -> None:
    sim = run(conductor(simple("t1"), {"name": "end", "taskReferenceName": "end", "type": "TERMINATE",
                                       "inputParameters": {"terminationStatus": "FAILED",
                                                           "terminationReason": "no stock for ${workflow.input.sku}",
                                                           "workflowOutput": {"sku": "${workflow.input.sku}"}}},
                        simple("never")), {"sku": "S-1"})
    done = sim.workflows["wf"]
    assert done.status == st.FAILED and done.reason == "no stock for S-1" and done.output == {"sku": "S-1"}
    assert "never" not in sim.statuses()


@pytest.mark.parametrize("status", ["COMPLETED", "TERMINATED"])
def test_terminate_output_that_is_not_an_object_is_wrapped_in_output(status: str) -> None:
    sim = run(conductor(simple("t1", inputParameters={"n": 5}),
                        {"name": "end", "taskReferenceName": "end", "type": "TERMINATE",
                         "inputParameters": {"terminationStatus": status, "workflowOutput": "${t1.output.echo.n}"}}))
    assert sim.workflows["wf"].status == status and sim.workflows["wf"].output == {"output": 5}


def test_terminate_with_a_bad_literal_status_is_refused_and_a_bad_resolved_one_fails_the_task() -> None:
    problems, _ = check(conductor({"name": "e", "taskReferenceName": "e", "type": "TERMINATE",
                                   "inputParameters": {"terminationStatus": "MAYBE"}}))
    assert problems and "'inputParameters.terminationStatus' must be one of COMPLETED" in problems[0]
    sim = run(conductor({"name": "e", "taskReferenceName": "e", "type": "TERMINATE",
                         "inputParameters": {"terminationStatus": "${workflow.input.s}"}}), {"s": "MAYBE"})
    assert sim.workflows["wf"].status == st.FAILED and "'terminationStatus' resolved to" in sim.workflows["wf"].reason


@pytest.mark.parametrize("duration,seconds", [("10s", 10), ("1 minute", 60), ("30 seconds", 30), ("2h 30m", 9000),
                                              ("1 day", 86400), (45, 45)])
def test_wait_duration_in_input_parameters(duration: Any, seconds: int) -> None:
    sim = run(conductor({"name": "w", "taskReferenceName": "w", "type": "WAIT",
                         "inputParameters": {"duration": duration}}, simple("after")))
    assert sim.workflows["wf"].status == st.COMPLETED
    assert sim.task("after").spec.scheduled_at_ms == START + seconds * 1000


def test_wait_until_a_date_in_input_parameters() -> None:
    sim = Sim(conductor({"name": "w", "taskReferenceName": "w", "type": "WAIT",
                         "inputParameters": {"until": "${workflow.input.at}"}}, simple("after")), DEFS)
    sim.start({"at": "2024-01-01 10:00 UTC"})
    sim.decide("wf")
    assert sim.task("w").spec.extra["until"] == parse_until_ms("2024-01-01 10:00 UTC") == 1704103200000
    assert sim.run().status == st.COMPLETED   # a time already past: the wait is over at once
    assert parse_until_ms("2024-01-01 10:00") == parse_until_ms("2024-01-01T10:00:00Z")
    assert parse_until_ms("2024-01-01 12:00 +02:00") == 1704103200000
    assert parse_duration_seconds("1m30s") == 90


def test_a_bad_literal_wait_is_refused_and_a_bad_resolved_one_fails_the_task() -> None:
    problems, _ = check(conductor({"name": "w", "taskReferenceName": "w", "type": "WAIT",
                                   "inputParameters": {"duration": "soon"}}))
    assert problems and "'inputParameters.duration': 'soon' is not a duration" in problems[0]
    problems, _ = check(conductor({"name": "w", "taskReferenceName": "w", "type": "WAIT",
                                   "inputParameters": {"until": "2024-13-01"}}))
    assert problems and "'inputParameters.until'" in problems[0]
    sim = run(conductor({"name": "w", "taskReferenceName": "w", "type": "WAIT",
                         "inputParameters": {"until": "${workflow.input.at}"}}), {"at": "tomorrow"})
    assert sim.workflows["wf"].status == st.FAILED and "'until' resolved to" in sim.task("w").runtime.reason


def test_a_wait_with_neither_waits_for_a_signal() -> None:
    sim = run(conductor({"name": "w", "taskReferenceName": "w", "type": "WAIT",
                         "inputParameters": {"eventReceived": True}}, simple("after")))
    assert sim.workflows["wf"].status == st.RUNNING
    sim.signal("w", {"ok": 1})
    assert sim.run().status == st.COMPLETED


def test_empty_output_parameters_give_the_last_tasks_output() -> None:
    sim = run(conductor(simple("t1"), simple("t2", inputParameters={"v": 2})))
    assert sim.workflows["wf"].output == {"echo": {"v": 2}}
    sim = run({"name": "ours", "tasks": [simple("t1", inputParameters={"v": 1})]})
    assert sim.workflows["wf"].output == {"echo": {"v": 1}}


def test_the_loop_reference_and_inner_outputs_are_in_a_conductor_loop_condition() -> None:
    sim = run(conductor({"name": "l", "taskReferenceName": "loop", "type": "DO_WHILE",
                         "inputParameters": {"value": "${workflow.input.n}"},
                         "loopCondition": "if ($.loop['iteration'] < $.value && $.t1.echo) { true; } else { false; }",
                         "loopOver": [simple("t1", inputParameters={"i": "${loop.output.iteration}"})]}),
              {"n": 3})
    assert sim.workflows["wf"].status == st.COMPLETED
    loop = sim.task("loop").output or {}
    assert loop["iteration"] == 3 and loop["2"] == {"t1": {"echo": {"i": 2}}}   # Conductor's output shape


def test_a_loop_condition_reading_the_scope_our_way_stays_a_safe_expression() -> None:
    problems, _ = check({"name": "ours", "tasks": [{"name": "l", "taskReferenceName": "loop", "type": "DO_WHILE",
                                                     "loopCondition": "$.loop.output.iteration < 2",
                                                     "loopOver": [simple("t1")]}]})
    assert problems == []
    normalised = check_workflow_def({"name": "ours", "tasks": [
        {"taskReferenceName": "loop", "type": "DO_WHILE", "loopCondition": "$.loop['iteration'] < 2",
         "loopOver": [simple("t1")]}]}, DEFS, {}).definition
    assert normalised["tasks"][0]["evaluatorType"] == "javascript"   # Conductor's scope: JavaScript


def test_a_value_param_loop_over_input_items() -> None:
    sim = run(conductor({"name": "l", "taskReferenceName": "loop", "type": "DO_WHILE", "evaluatorType": "value-param",
                         "loopCondition": "", "inputParameters": {"items": ["x", "y"], "keepLastN": 1},
                         "loopOver": [simple("t1", inputParameters={"it": "${loop.output.item}"})]}))
    loop = sim.task("loop").output or {}
    assert sim.workflows["wf"].status == st.COMPLETED and sim.task("t1__2").spec.input == {"it": "y"}
    assert [k for k in loop if k.isdigit()] == ["2"]   # keepLastN


def test_sub_workflow_name_and_version_from_expressions() -> None:
    child = {"name": "child", "version": 2, "tasks": [simple("in")], "outputParameters": {"v": 2}}
    older = {"name": "child", "version": 1, "tasks": [simple("in")], "outputParameters": {"v": 1}}
    definition = conductor({"name": "s", "taskReferenceName": "s", "type": "SUB_WORKFLOW",
                            "subWorkflowParam": {"name": "${workflow.input.wf}", "version": "${workflow.input.v}"}})
    assert needs_every_workflow_def(definition) and snapshot_workflow_refs(definition) == []
    sim = run(definition, {"wf": "child", "v": 1}, workflows={"child:1": older, "child:2": child})
    assert sim.workflows["wf"].status == st.COMPLETED and sim.task("s").output == {"v": 1}
    sim = run(definition, {"wf": "child"}, workflows={"child:1": older, "child:2": child})
    assert sim.task("s").output == {"v": 2}   # no version: the latest
    sim = run(definition, {"wf": "nobody"}, workflows={"child:2": child})
    assert sim.workflows["wf"].status == st.FAILED and "'nobody' version latest is not in" in sim.workflows["wf"].reason


def test_an_inline_sub_workflow_definition() -> None:
    definition = conductor({"name": "s", "taskReferenceName": "s", "type": "SUB_WORKFLOW",
                            "subWorkflowParam": {"name": "inline", "version": 1, "workflowDefinition": {
                                "name": "inline", "version": 1, "schemaVersion": 2,
                                "tasks": [simple("in", "b", inputParameters={"x": "${workflow.input.x}"})]}},
                            "inputParameters": {"x": 5}})
    assert referenced_task_names(definition) == {"b"} and snapshot_workflow_refs(definition) == []
    sim = run(definition)
    assert sim.workflows["wf"].status == st.COMPLETED and sim.task("s").output == {"echo": {"x": 5}}
    problems, _ = check(conductor({"name": "s", "taskReferenceName": "s", "type": "SUB_WORKFLOW",
                                   "subWorkflowParam": {"name": "i", "workflowDefinition": {
                                       "name": "i", "tasks": [simple("in", "nope")]}}}))
    assert problems and "'subWorkflowParam.workflowDefinition': task 'in' (tasks[0]): no task definition" in problems[0]


@pytest.mark.parametrize("written", ["$workflow.input.onFailure", "${workflow.input.onFailure}"])
def test_failure_workflow_named_by_an_expression(written: str) -> None:
    cleanup = {"name": "cleanup", "tasks": [simple("undo")]}
    definition = conductor(simple("t1"), failureWorkflow=written)
    assert needs_every_workflow_def(definition)
    sim = Sim(definition, DEFS, {"cleanup:0": cleanup})
    sim.start({"onFailure": "cleanup"})
    assert sim.run(lambda task: ("FAILED", "boom"), every_workflow=True).status == st.FAILED
    started = [w for w in sim.workflows.values() if w.name == "cleanup"]
    assert len(started) == 1 and started[0].input["failedWorkflow"]["tasks"][0]["referenceTaskName"] == "t1"
    assert started[0].input["failureStatus"] == "FAILED" and started[0].input["reason"]


def test_cpewf_task_id_is_the_tasks_own_id() -> None:
    sim = run(conductor(simple("t1", inputParameters={"me": "${CPEWF_TASK_ID}", "text": "id=${CPEWF_TASK_ID}"})))
    task = sim.task("t1")
    assert task.spec.input == {"me": task.task_id, "text": f"id={task.task_id}"}


def test_conductor_task_fields_and_json_paths_resolve() -> None:
    sim = run(conductor(simple("t1", inputParameters={"list": [1, 2, 3]}),
                        simple("t2", inputParameters={"status": "${t1.status}", "n": "${t1.input.list.length()}",
                                                      "first": "${t1.output.echo['list'][0]}",
                                                      "type": "${workflow.workflowType}",
                                                      "flag": "on=${workflow.input.on}"})), {"on": True})
    assert sim.task("t2").spec.input == {"status": "COMPLETED", "n": 3, "first": 1, "type": "cw", "flag": "on=true"}


def test_workflow_input_template_gives_default_input_values() -> None:
    sim = run(conductor(simple("t1", inputParameters={"a": "${workflow.input.a}", "b": "${workflow.input.b}"}),
                        inputTemplate={"a": 1, "b": 2}), {"b": 3})
    assert sim.task("t1").spec.input == {"a": 1, "b": 3}


def test_task_definition_input_template_and_embedded_definition() -> None:
    definition = conductor({**simple("t1", "unregistered", inputParameters={"x": 1}),
                            "taskDefinition": {"retryCount": 1, "retryDelaySeconds": 0,
                                               "inputTemplate": {"x": 0, "y": "${workflow.input.y}"}}})
    assert referenced_task_names(definition) == set()   # the embedded definition is enough
    attempts = []

    def fails_once(task: Any) -> tuple[str, Any]:
        attempts.append(task.spec.attempt)
        return ("FAILED", "once") if task.spec.attempt == 0 else echo(task)
    sim = run(definition, {"y": 7}, handler=fails_once)
    assert sim.workflows["wf"].status == st.COMPLETED and attempts == [0, 1]   # the embedded retryCount
    assert sim.task("t1").spec.input == {"x": 1, "y": 7}


def test_poll_timeout_times_out_an_attempt_no_worker_takes() -> None:
    defs = {**DEFS, **task_defs("slowpoke", retryCount=1, pollTimeoutSeconds=5)}
    sim = Sim(conductor(simple("t1", "slowpoke")), defs)
    sim.start()
    sim.decide("wf")
    sim.now += 5_000
    sim.decide("wf")
    assert sim.workflows["wf"].latest_attempt("t1") is not None
    first = next(t for t in sim.workflows["wf"].tasks if t.spec.attempt == 0)
    assert first.runtime.status == st.TASK_TIMED_OUT and "pollTimeoutSeconds" in first.runtime.reason
    sim.decide("wf")
    assert sim.task("t1").spec.attempt == 1 and sim.task("t1").runtime.status == st.SCHEDULED


# ================================================================ 3. JavaScript where Conductor uses it

@pytest.mark.parametrize("evaluator", ["javascript", "graaljs"])
def test_inline_javascript_sees_its_input_parameters_as_dollar(evaluator: str) -> None:
    sim = run(conductor({"name": "i", "taskReferenceName": "i", "type": "INLINE", "inputParameters": {
        "evaluatorType": evaluator, "value": "${workflow.input.v}",
        "expression": "function e() { var total = 0; for (var k of $.value) total += k; return {total: total, "
                      "type: $.evaluatorType}; } e();"}}), {"v": [1, 2, 3]})
    assert sim.task("i").output == {"result": {"total": 6, "type": evaluator}}


def test_inline_value_param_and_our_safe_expression() -> None:
    sim = run(conductor({"name": "i", "taskReferenceName": "i", "type": "INLINE", "inputParameters": {
        "evaluatorType": "value-param", "expression": "pick", "pick": 42}},
        {"name": "j", "taskReferenceName": "j", "type": "INLINE", "expression": "$.n * 2",
         "inputParameters": {"n": 4}}))
    assert sim.task("i").output == {"result": 42} and sim.task("j").output == {"result": 8}


def test_inline_needs_an_evaluator_type_with_a_conductor_expression() -> None:
    problems, _ = check(conductor({"name": "i", "taskReferenceName": "i", "type": "INLINE",
                                   "inputParameters": {"expression": "1"}}))
    assert problems and "'inputParameters.evaluatorType' is required" in problems[0]


def test_javascript_that_does_not_compile_is_refused_at_registration() -> None:
    problems, _ = check(conductor({"name": "i", "taskReferenceName": "i", "type": "INLINE",
                                   "inputParameters": {"evaluatorType": "javascript", "expression": "1 +"}}))
    assert problems and "SyntaxError" in problems[0]


def test_a_script_that_runs_too_long_fails_its_task_and_never_stalls() -> None:
    started = time.perf_counter()
    sim = run(conductor({"name": "i", "taskReferenceName": "i", "type": "INLINE", "inputParameters": {
        "evaluatorType": "javascript", "expression": "while (true) {}"}}))
    assert time.perf_counter() - started < 2
    task = sim.task("i")
    assert task.runtime.status == st.FAILED_WITH_TERMINAL_ERROR
    assert "ran longer than the limit of 100 ms" in task.runtime.reason
    assert sim.workflows["wf"].status == st.FAILED


@pytest.mark.parametrize("script,reason", [
    ("var a = []; while (true) { a.push(new Array(100000).fill(1)); }", "limit"),
    ("new Array(1e9).fill(0)", "arrays of more than"),
    ("new Float64Array(1e9)", "buffers of more than"),
])
def test_a_script_that_grows_too_big_fails_its_task(script: str, reason: str) -> None:
    with pytest.raises(javascript.JavaScriptError, match=reason):
        javascript.evaluate(script, {})


def test_scripts_cannot_leave_state_for_the_next_one() -> None:
    javascript.evaluate("leaked = 1; Object.prototype.polluted = 1; JSON.parse = null; 1", {})
    assert javascript.evaluate("typeof leaked + ' ' + typeof ({}).polluted + ' ' + typeof JSON.parse", {}) == \
        "undefined undefined function"


def test_switch_with_javascript() -> None:
    sim = run(conductor({"name": "s", "taskReferenceName": "s", "type": "SWITCH", "evaluatorType": "javascript",
                         "expression": "$.n > 10 ? 'big' : ($.n > 5)", "inputParameters": {"n": "${workflow.input.n}"},
                         "decisionCases": {"big": [simple("big")], "true": [simple("mid")]},
                         "defaultCase": [simple("small")]}), {"n": 7})
    assert "mid" in sim.statuses() and sim.task("s").output == {"evaluationResult": ["true"], "selectedCase": "true"}


def test_lambda_script_expression_is_a_function_body() -> None:
    sim = run(conductor({"name": "l", "taskReferenceName": "l", "type": "LAMBDA", "inputParameters": {
        "v": "${workflow.input.v}", "scriptExpression": "if ($.v == 1) { return {one: true}; } return {one: false};"}},
        {"name": "m", "taskReferenceName": "m", "type": "LAMBDA",
         "inputParameters": {"scriptExpression": "function e() { return 1; } e();"}}), {"v": 1})
    assert sim.task("l").output == {"result": {"one": True}}
    assert sim.task("m").output == {"result": None}   # the body returns nothing, as in Conductor


def test_javascript_reuses_one_context_and_is_fast() -> None:
    javascript.evaluate("1", {})
    started = time.perf_counter()
    for _ in range(50):
        javascript.evaluate("$.a + 1", {"a": 1})
    assert (time.perf_counter() - started) / 50 < 0.02   # a fresh context per evaluation costs ~3-6 ms


# ================================================================ 4. task types that need no I/O

def test_decision_by_case_value_param_and_case_expression() -> None:
    sim = run(conductor({"name": "d", "taskReferenceName": "d", "type": "DECISION", "caseValueParam": "c",
                         "inputParameters": {"c": "${workflow.input.c}"},
                         "decisionCases": {"x": [simple("x")]}, "defaultCase": [simple("other")]},
                        {"name": "e", "taskReferenceName": "e", "type": "DECISION",
                         "caseExpression": "if ($.n > 1) { 'many' } else { 'one' }", "inputParameters": {"n": 2},
                         "decisionCases": {"many": [simple("many")]}}), {"c": "x"})
    assert {"x", "many"} <= set(sim.statuses()) and "other" not in sim.statuses()
    assert sim.task("d").output == {"caseOutput": ["x"], "selectedCase": "x"}


def test_json_jq_transform() -> None:
    sim = run(conductor({"name": "j", "taskReferenceName": "j", "type": "JSON_JQ_TRANSFORM", "inputParameters": {
        "persons": [{"name": "a", "id": 1}, {"name": "b", "id": 2}], "queryExpression": ".persons[] | .id"}}))
    assert sim.task("j").output == {"result": 1, "resultList": [1, 2]}
    problems, _ = check(conductor({"name": "j", "taskReferenceName": "j", "type": "JSON_JQ_TRANSFORM",
                                   "inputParameters": {"queryExpression": "{ a: "}}))
    assert problems and "'inputParameters.queryExpression' does not compile" in problems[0]
    sim = run(conductor({"name": "j", "taskReferenceName": "j", "type": "JSON_JQ_TRANSFORM",
                         "inputParameters": {"n": 5, "queryExpression": ".n.x"}}))
    assert sim.workflows["wf"].status == st.FAILED and "Cannot index number" in sim.task("j").runtime.reason
    sim = run(conductor({"name": "j", "taskReferenceName": "j", "type": "JSON_JQ_TRANSFORM",
                         "inputParameters": {"big": "${workflow.input.big}", "queryExpression": "."}}),
              {"big": "x" * (1024 * 1024 + 1)})
    assert "more than the limit" in sim.task("j").runtime.reason   # bounded input


@pytest.mark.parametrize("query,used", [("$ENV.REDIS_PASSWORD", "$ENV"), ("env | keys", "env"),
                                        ("last(range(1e9))", "range"), ("def f: f; f", "def"),
                                        ("repeat(1)", "repeat"), ("input", "input")])
def test_jq_that_would_hold_the_node_or_read_its_environment_is_refused(query: str, used: str) -> None:
    problems, _ = check(conductor({"name": "j", "taskReferenceName": "j", "type": "JSON_JQ_TRANSFORM",
                                   "inputParameters": {"queryExpression": query}}))
    assert problems and f"'inputParameters.queryExpression' uses {used}" in problems[0]
    sim = run(conductor({"name": "j", "taskReferenceName": "j", "type": "JSON_JQ_TRANSFORM",
                         "inputParameters": {"queryExpression": "${workflow.input.q}"}}), {"q": query})
    assert sim.workflows["wf"].status == st.FAILED and f"uses {used}" in sim.task("j").runtime.reason
    problems, _ = check(conductor({"name": "j", "taskReferenceName": "j", "type": "JSON_JQ_TRANSFORM",
                                   "inputParameters": {"queryExpression": ".env.x // .input // {range: 1}"}}))
    assert problems == []   # keys that look like them are fine


def test_dynamic_runs_the_task_its_input_names() -> None:
    definition = conductor({"name": "d", "taskReferenceName": "d", "type": "DYNAMIC",
                            "dynamicTaskNameParam": "taskToExecute",
                            "inputParameters": {"taskToExecute": "${workflow.input.task}", "x": 1}})
    assert needs_every_task_def(definition)
    sim = run(definition, {"task": "dyn_target"})
    assert sim.workflows["wf"].status == st.COMPLETED and sim.task("d").spec.task_type == "dyn_target"
    sim = run(definition, {"task": "ghost"})
    assert sim.workflows["wf"].status == st.FAILED and "names no task definition" in sim.task("d").runtime.reason


def test_start_workflow_is_fire_and_forget() -> None:
    other = {"name": "other", "tasks": [simple("o")]}
    definition = conductor({"name": "s", "taskReferenceName": "s", "type": "START_WORKFLOW", "inputParameters": {
        "startWorkflow": {"name": "other", "input": {"k": "${workflow.input.k}"}, "correlationId": "c-1"}}},
        simple("after"))
    assert snapshot_workflow_refs(definition) == [("other", 0)]
    sim = Sim(definition, DEFS, {"other:0": other})
    sim.start({"k": 9})
    sim.decide("wf")
    started_id = sim.output("s")["workflowId"]
    started = sim.workflows[started_id]
    assert started.parent == "" and started.input == {"k": 9} and started.correlation_id == "c-1"
    assert sim.run(every_workflow=True).status == st.COMPLETED and started_id in sim.workflows
    assert sim.workflows[started_id].status == st.COMPLETED


def test_exclusive_join_takes_the_output_of_the_branch_that_ran() -> None:
    sim = run(conductor({"name": "d", "taskReferenceName": "d", "type": "SWITCH", "evaluatorType": "value-param",
                         "expression": "c", "inputParameters": {"c": "${workflow.input.c}"},
                         "decisionCases": {"x": [simple("x", inputParameters={"v": "x"})],
                                           "y": [simple("y", inputParameters={"v": "y"})]},
                         "defaultCase": [simple("z", inputParameters={"v": "z"})]},
                        {"name": "j", "taskReferenceName": "j", "type": "EXCLUSIVE_JOIN", "joinOn": ["x", "y"],
                         "defaultExclusiveJoinTask": ["z"]}), {"c": "y"})
    assert sim.task("j").output == {"echo": {"v": "y"}}
    sim = run(sim.definition, {"c": "none"})
    assert sim.task("j").output == {"echo": {"v": "z"}}


@pytest.mark.parametrize("kind", ["HTTP", "HTTP_POLL", "KAFKA_PUBLISH", "GENERATE_IMAGE"])
def test_io_task_types_are_queued_under_their_own_type(kind: str) -> None:
    """HTTP and HTTP_POLL are served by the nodes' executor (tests/integration/cluster/test_http_tasks.py) through
    the same queue a worker of that type would serve; the other I/O types need such a worker."""
    definition = conductor({"name": "call", "taskReferenceName": "call", "type": kind,
                            "inputParameters": {"http_request": {"uri": "${workflow.input.uri}", "method": "GET"}}})
    problems, warnings = check(definition)
    delegated = any(f"{kind} tasks are not run by this version" in w for w in warnings)
    assert problems == [] and delegated == (kind not in ("HTTP", "HTTP_POLL"))
    served = []

    def worker(task: Any) -> tuple[str, Any]:
        served.append(task.spec.task_type)
        return "COMPLETED", {"response": {"statusCode": 200}}
    sim = run(definition, {"uri": "http://x"}, handler=worker)
    assert served == [kind] and sim.workflows["wf"].status == st.COMPLETED
    assert sim.task("call").spec.input == {"http_request": {"uri": "http://x", "method": "GET"}}


def test_conductor_dynamic_fork_of_tasks_and_of_sub_workflows() -> None:
    child = {"name": "child", "version": 1, "tasks": [simple("in", inputParameters={"u": "${workflow.input.url}"})]}
    definition = conductor(
        {"name": "f", "taskReferenceName": "f", "type": "FORK_JOIN_DYNAMIC", "dynamicForkTasksParam": "dynamicTasks",
         "dynamicForkTasksInputParamName": "dynamicTasksInput",
         "inputParameters": {"forkTaskWorkflow": "child", "forkTaskWorkflowVersion": "1",
                             "forkTaskInputs": [{"url": "a"}, {"url": "b"}]}},
        {"name": "j", "taskReferenceName": "j", "type": "JOIN"},
        {"name": "g", "taskReferenceName": "g", "type": "FORK_JOIN_DYNAMIC", "dynamicForkTasksParam": "x",
         "dynamicForkTasksInputParamName": "y", "inputParameters": {"forkTaskName": "b", "forkTaskInputs": [1, 2]}},
        {"name": "k", "taskReferenceName": "k", "type": "JOIN"})
    assert ("child", 1) in snapshot_workflow_refs(definition) and "b" in referenced_task_names(definition)
    sim = run(definition, workflows={"child:1": child})
    assert sim.workflows["wf"].status == st.COMPLETED
    assert sim.task("_f_0").spec.input == {"url": "a", "__index": 0}   # Conductor's "_<fork ref>_<i>"
    assert sim.task("_b_1").spec.input == {"input": 2, "__index": 1}
    assert sorted(sim.task("j").output or {}) == ["_f_0", "_f_1"]
    children = [w for w in sim.workflows.values() if w.name == "child"]
    assert sorted(c.input["url"] for c in children) == ["a", "b"]


def test_dynamic_fork_specs_resolve_their_own_inputs_and_may_be_of_any_type() -> None:
    specs = [{"name": "a", "taskReferenceName": "s1", "type": "SIMPLE", "inputParameters": {"me": "${CPEWF_TASK_ID}"}},
             {"name": "calc", "taskReferenceName": "s2", "type": "INLINE",
              "inputParameters": {"evaluatorType": "javascript", "expression": "$.n * 2"}}]
    sim = run(conductor({"name": "f", "taskReferenceName": "f", "type": "FORK_JOIN_DYNAMIC",
                         "dynamicForkTasksParam": "tasks", "dynamicForkTasksInputParamName": "inputs",
                         "inputParameters": {"tasks": "${workflow.input.specs}", "inputs": {"s2": {"n": 21}}}},
                        {"name": "j", "taskReferenceName": "j", "type": "JOIN"}), {"specs": specs})
    assert sim.workflows["wf"].status == st.COMPLETED
    assert sim.task("s1").spec.input == {"me": sim.task("s1").task_id}
    assert sim.task("s2").output == {"result": 42}

"""One bad workflow never stops the others: bad values are refused at registration, or fail
their own task at run time with a reason; work per decision and per expression is bounded.

Pure: definitions and the decider run in memory (tests/sim.py), no servers.
"""

from __future__ import annotations

import inspect
import json
import math
import sys
import time
from typing import Any
from collections.abc import Callable
from functools import partial

import pytest

from orchestrator.core import limits
from orchestrator.core import safe_expr
from orchestrator.core import statuses as st
from orchestrator.core.apply import new_child
from orchestrator.core.decider import NewWorkflow, retry_delay_ms
from orchestrator.core.definitions import (iter_tasks, normalise_task_def, normalise_workflow_def, parse_document,
                                           referenced_task_names, referenced_workflow_names,
                                           validate_workflow_def, workflow_cycle, workflows_to_fetch)
from orchestrator.core.errors import InvalidArgument
from orchestrator.core.safe_expr import SafeExpressionError, evaluate
from sim import START, Sim, task_defs

DEFS = task_defs("a", "b", retryCount=0)
TEN_YEARS = limits.MAX_DURATION_SECONDS


def wf(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "t", "tasks": list(tasks), **extra}


def simple(ref: str, name: str = "a", **extra: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, **extra}


def problems_of(definition: dict[str, Any], workflow_defs: dict[str, Any] | None = None) -> list[str]:
    _, problems = validate_workflow_def(definition, DEFS, workflow_defs or {})
    return problems


def refused(call: Callable[[], Any]) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        call()
    return info.value


def quickest(call: Callable[[], Any], runs: int = 3) -> float:
    """Seconds of the quickest of a few runs: a busy machine slows some, never all."""
    best = math.inf
    for _ in range(runs):
        began = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - began)
    return best


# ================================================================ 1. numbers in definitions

# The same bad value in JSON (Python's json reads NaN and Infinity) and in YAML (.nan, .inf).
BAD_NUMBERS = [("NaN", ".nan", "nan"), ("Infinity", ".inf", "inf"), ("-Infinity", "-.inf", "-inf"),
               ("1e999", "1e999", "inf"), (str(TEN_YEARS + 1), str(TEN_YEARS + 1), str(TEN_YEARS + 1))]
TASK_DEF_FIELDS = ["timeoutSeconds", "responseTimeoutSeconds", "retryDelaySeconds", "maxRetryDelaySeconds",
                   "rateLimitFrequencyInSeconds"]


@pytest.mark.parametrize("field", TASK_DEF_FIELDS + ["backoffScaleFactor"])
@pytest.mark.parametrize("as_json,as_yaml,shown", BAD_NUMBERS)
def test_task_definition_numbers_must_be_finite_and_sane_in_json_and_yaml(field: str, as_json: str, as_yaml: str,
                                                                         shown: str) -> None:
    if as_yaml == "1e999":
        as_yaml = "1.0e+999"   # YAML 1.1 reads a float only with a dot and a signed exponent
    for text in (f'{{"name": "charge", "{field}": {as_json}}}', f"name: charge\n{field}: {as_yaml}\n"):
        error = refused(partial(normalise_task_def, parse_document(text)))
        assert len(error.problems) == 1, error.problems
        assert error.problems[0].startswith(f"task definition 'charge': '{field}' must be a number >= ")
        assert error.problems[0].endswith(f"got {shown}"), error.problems


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e300, 10 ** 400])
def test_integer_fields_refuse_non_finite_and_absurd_values(value: Any) -> None:
    for field in ("retryCount", "rateLimitPerFrequency", "concurrentExecLimit"):
        error = refused(partial(normalise_task_def, {"name": "x", field: value}))
        assert error.problems[0].startswith(f"task definition 'x': '{field}' must be an integer from 0 to ")
    problems = problems_of(wf(simple("r", retryCount=value),
                              {"type": "DO_WHILE", "taskReferenceName": "l", "loopCondition": "false",
                               "maxIterations": value, "loopOver": [simple("in")]},
                              {"type": "SUB_WORKFLOW", "taskReferenceName": "s",
                               "subWorkflowParam": {"name": "t2", "version": value}}, version=value),
                           {"t2": {"name": "t2", "tasks": [simple("x")]}})
    assert len(problems) == 4 and all(len(problem) < 200 for problem in problems), problems
    assert problems[0].startswith("workflow 't': 'version' must be an integer from 1 to 2147483647, got ")
    assert problems[1:] == ["task 'r' (tasks[0]): 'retryCount' must be an integer from 0 to 100",
                            "task 'l' (tasks[1]): 'maxIterations' must be an integer from 1 to 1000",
                            "task 's' (tasks[2]): 'subWorkflowParam.version' must be 0 (latest) or a version number"]


def test_task_definition_numbers_at_their_bounds_are_accepted() -> None:
    definition = normalise_task_def({"name": "x", "timeoutSeconds": TEN_YEARS, "responseTimeoutSeconds": TEN_YEARS,
                                     "retryDelaySeconds": 0, "maxRetryDelaySeconds": TEN_YEARS,
                                     "backoffScaleFactor": limits.MAX_BACKOFF_SCALE_FACTOR,
                                     "rateLimitFrequencyInSeconds": TEN_YEARS})
    assert definition["timeoutSeconds"] == float(TEN_YEARS)
    assert "at most 1000" in refused(lambda: normalise_task_def({"name": "x", "backoffScaleFactor": 1001})).problems[0]


def test_integers_too_big_for_a_float_are_refused_not_an_overflow_error() -> None:
    assert "got 1000000" in refused(lambda: normalise_task_def({"name": "x", "timeoutSeconds": 10 ** 400})).problems[0]
    assert "'retryCount'" in refused(lambda: normalise_task_def({"name": "x", "retryCount": 10 ** 400})).problems[0]


@pytest.mark.parametrize("as_json,as_yaml,shown", BAD_NUMBERS)
def test_workflow_numbers_are_refused_naming_the_task_and_field(as_json: str, as_yaml: str, shown: str) -> None:
    if as_yaml == "1e999":
        as_yaml = "1.0e+999"
    json_text = json.dumps(wf(
        simple("late", startDelay="@"), {"type": "WAIT", "taskReferenceName": "nap", "duration": "@"},
        simple("data", inputParameters={"x": {"y": ["@"]}}), timeoutSeconds="@",
        variables={"v": "@"})).replace('"@"', as_json)
    yaml_text = ("name: t\ntimeoutSeconds: @\nvariables: {v: @}\ntasks:\n"
                 "  - {name: a, taskReferenceName: late, startDelay: @}\n"
                 "  - {type: WAIT, taskReferenceName: nap, duration: @}\n"
                 "  - {name: a, taskReferenceName: data, inputParameters: {x: {y: [@]}}}\n").replace("@", as_yaml)
    for text in (json_text, yaml_text):
        error = refused(lambda: normalise_workflow_def(parse_document(text), DEFS, {}))  # noqa: B023 (called at once)
        text_of = "\n".join(error.problems)
        assert f"workflow 't': 'timeoutSeconds' must be a number >= 0 and at most {TEN_YEARS} (10 years), got {shown}" \
            in text_of
        assert f"task 'late' (tasks[0]): 'startDelay' must be a number of seconds >= 0 and at most {TEN_YEARS} " \
               f"(10 years), got {shown}" in text_of
        assert "task 'nap' (tasks[1]): 'duration' must be a number of seconds >= 0" in text_of
        if shown != str(TEN_YEARS + 1):   # data may be large; it must be a number JSON can carry
            assert f"task 'data' (tasks[2]): 'inputParameters': 'x.y[0]' is {shown}, not a finite number" in text_of
            assert "workflow 't': 'variables': 'v' is" in text_of


@pytest.mark.parametrize("until,fragment", [
    (math.nan, "got nan"), (math.inf, "got inf"), (-1, "got -1"), (limits.MAX_EPOCH_MS + 1, "got 253402300800000"),
    ("tomorrow", "got 'tomorrow'"), ("1e999", "got '1e999'"), (True, "got True"), ([1], None),
])
def test_a_literal_wait_until_must_be_a_sane_time(until: Any, fragment: str | None) -> None:
    problems = problems_of(wf({"type": "WAIT", "taskReferenceName": "w", "until": until}))
    assert problems and problems[0].startswith("task 'w' (tasks[0]): 'until' must be epoch milliseconds"), problems
    assert fragment is None or fragment in problems[0]
    assert not problems_of(wf({"type": "WAIT", "taskReferenceName": "w", "until": "1767225600000"}))
    assert not problems_of(wf({"type": "WAIT", "taskReferenceName": "w", "until": limits.MAX_EPOCH_MS}))


def test_a_wait_until_template_may_only_name_earlier_tasks() -> None:
    problems = problems_of(wf({"type": "WAIT", "taskReferenceName": "w", "until": "${later.output.at}"},
                              simple("later")))
    assert problems == ["task 'w' (tasks[0]): 'until': '${later...}' names no earlier task reference"]


def test_terminate_output_must_be_an_object() -> None:
    problems = problems_of(wf({"type": "TERMINATE", "taskReferenceName": "end", "workflowOutput": "${workflow.input}"}))
    assert problems == ["task 'end' (tasks[0]): 'workflowOutput' must be an object (it becomes the workflow's output)"]


# ================================================================ 2. values that only appear at run time

def wait_for(value: Any, **extra: Any) -> Sim:
    sim = Sim(wf({"type": "WAIT", "taskReferenceName": "pause", "until": "${workflow.input.at}", **extra},
                 simple("after")), DEFS)
    sim.start({"at": value})
    return sim


@pytest.mark.parametrize("value,shown", [
    ("inf", '"inf"'), ("nan", '"nan"'), ("Infinity", '"Infinity"'), ("tomorrow", '"tomorrow"'),
    ("1e999", '"1e999"'), (-5, "-5"), ("-5", '"-5"'), (1e300, "1e+300"), (START + (TEN_YEARS + 60) * 1000, None),
    ({"at": 1}, '{"at": 1}'), ([START], f"[{START}]"), (True, "true"), ("12:00", '"12:00"'),
])
def test_a_wait_until_that_resolves_to_no_sane_time_fails_that_task(value: Any, shown: str | None) -> None:
    sim = wait_for(value)
    done = sim.run()   # decide() must not raise
    pause = sim.task("pause")
    assert pause.runtime.status == st.FAILED_WITH_TERMINAL_ERROR
    assert pause.runtime.reason.startswith("'until' resolved to ")
    assert shown is None or shown in pause.runtime.reason, pause.runtime.reason
    assert done.status == st.FAILED and "'until' resolved to" in done.reason and "after" not in sim.statuses()


def test_a_wait_until_far_ahead_names_the_limit() -> None:
    sim = wait_for(START + (TEN_YEARS + 60) * 1000)
    sim.run()
    assert "more than 10 years ahead" in sim.task("pause").runtime.reason


def test_an_optional_wait_with_a_bad_until_lets_the_flow_go_on() -> None:
    sim = wait_for("tomorrow", optional=True)
    assert sim.run().status == st.COMPLETED
    assert sim.statuses() == {"pause": st.COMPLETED_WITH_ERRORS, "after": st.TASK_COMPLETED}


@pytest.mark.parametrize("value", [START + 5_000, str(START + 5_000), f" {START + 5_000}.0 ", float(START + 5_000)])
def test_a_wait_until_given_as_a_number_or_text_still_waits(value: Any) -> None:
    sim = wait_for(value)
    assert sim.run().status == st.COMPLETED and sim.now == START + 5_000


@pytest.mark.parametrize("value", [None, ""])
def test_a_missing_wait_until_has_passed_as_before(value: Any) -> None:
    sim = wait_for(value)
    assert sim.run().status == st.COMPLETED and sim.now == START


def test_an_operator_retry_of_a_failed_wait_resolves_until_again_without_raising() -> None:
    sim = wait_for("tomorrow")
    assert sim.run().status == st.FAILED
    sim.command("retry", status=st.RUNNING)
    assert sim.run().status == st.FAILED
    assert sim.task("pause").spec.attempt == 1 and "'until' resolved to" in sim.task("pause").runtime.reason


def test_failed_optional_containers_do_not_raise_out_of_the_decider() -> None:
    sim = Sim(wf({"type": "FORK_JOIN_DYNAMIC", "taskReferenceName": "f", "forkTaskName": "a", "optional": True,
                  "forkTaskInputs": "${workflow.input.x}"}, {"type": "JOIN", "taskReferenceName": "j"},
                 {"type": "SWITCH", "taskReferenceName": "s", "evaluatorType": "expression", "optional": True,
                  "expression": "$.x.y + 1", "inputParameters": {"x": 1},
                  "decisionCases": {"1": [simple("inside")]}}, simple("after")), DEFS)
    sim.start({"x": "not a list"})
    assert sim.run().status == st.COMPLETED
    assert sim.statuses() == {"f": st.COMPLETED_WITH_ERRORS, "j": st.TASK_COMPLETED,
                              "s": st.COMPLETED_WITH_ERRORS, "after": st.TASK_COMPLETED}


def test_a_definition_stored_before_the_bounds_existed_does_not_raise() -> None:
    """A snapshot written before registration checked numbers: the decider clamps, not raises."""
    defs = task_defs("a", retryCount=1, retryLogic="EXPONENTIAL_BACKOFF")
    defs["a"].update({"responseTimeoutSeconds": math.inf, "timeoutSeconds": math.nan, "retryDelaySeconds": math.nan,
                      "maxRetryDelaySeconds": math.inf})
    sim = Sim(wf(simple("x"), {"type": "WAIT", "taskReferenceName": "w", "duration": 1}), defs)
    sim.definition["tasks"][0]["startDelay"] = math.nan
    sim.definition["tasks"][1]["duration"] = math.inf
    sim.definition["timeoutSeconds"] = 1e300
    sim.start()
    sim.run(lambda task: ("FAILED", "flaky") if task.spec.attempt == 0 else ("COMPLETED", {}))
    assert sim.task("x").runtime.status == st.TASK_COMPLETED and sim.task("x").spec.attempt == 1
    assert sim.task("w").spec.extra["until"] == sim.task("w").spec.scheduled_at_ms + TEN_YEARS * 1000


def test_retry_delay_does_not_overflow_after_many_operator_retries() -> None:
    task_def = normalise_task_def({"name": "x", "retryLogic": "EXPONENTIAL_BACKOFF", "retryDelaySeconds": 1,
                                   "maxRetryDelaySeconds": 60})
    assert retry_delay_ms(task_def, 5000) == 60_000


def test_a_number_key_that_is_not_finite_is_simply_not_found() -> None:
    assert evaluate("$.obj[$.nan]", {"obj": {"nan": 1, "NaN": 2}, "nan": math.nan}) is None
    assert evaluate("$.obj[2.0]", {"obj": {"2": "two"}}) == "two"


# ================================================================ 3. nesting

def nested(kind: str, levels: int) -> dict[str, Any]:
    """`levels` containers of one kind around a SIMPLE task, built without recursion."""
    task: dict[str, Any] = simple("leaf")
    for i in range(levels):
        ref = f"c{i}"
        if kind == "FORK_JOIN":
            task = {"type": kind, "taskReferenceName": ref, "forkTasks": [[task]]}
        elif kind == "SWITCH":
            task = {"type": kind, "taskReferenceName": ref, "expression": "k", "inputParameters": {"k": "x"},
                    "decisionCases": {"x": [task]}}
        else:
            task = {"type": kind, "taskReferenceName": ref, "loopCondition": "false", "loopOver": [task]}
    return wf(task)


@pytest.mark.parametrize("kind", ["FORK_JOIN", "SWITCH", "DO_WHILE"])
def test_containers_nest_up_to_the_limit(kind: str) -> None:
    limit = limits.MAX_NESTING_DEPTH
    assert limit == 8
    assert problems_of(nested(kind, limit)) == []
    problems = problems_of(nested(kind, limit + 1))
    assert problems[0].startswith("task 'leaf' (tasks[0]")
    assert problems[0].endswith(f"nested inside 9 container tasks (FORK_JOIN, FORK_JOIN_DYNAMIC, SWITCH, DO_WHILE), "
                                f"more than the limit of {limit}; move the inner part into a SUB_WORKFLOW")


@pytest.mark.parametrize("kind", ["FORK_JOIN", "SWITCH", "DO_WHILE"])
@pytest.mark.parametrize("levels", [200, 100_000])
def test_absurd_nesting_is_refused_quickly_without_recursion(kind: str, levels: int) -> None:
    definition = nested(kind, levels)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(150 + len(inspect.stack(0)))   # nothing here may recurse once per level
    try:
        began = time.perf_counter()
        problems = problems_of(definition)
        elapsed = time.perf_counter() - began
        with pytest.raises(InvalidArgument):
            normalise_workflow_def(definition, DEFS, {})
        # What the API reads from a definition before validating it must not recurse either.
        assert referenced_workflow_names(definition) == set()
        if levels < 1000:
            assert referenced_task_names(definition) == {"a"}
            assert sum(1 for _ in iter_tasks(definition["tasks"])) == levels + 1
    finally:
        sys.setrecursionlimit(limit)
    assert elapsed < 0.5
    assert f"task 'c{levels - 10}' (tasks[0]" in problems[0] and "more than the limit of 8" in problems[0]
    assert "lists and objects nest deeper than the limit of 32 levels" in "\n".join(problems)


@pytest.mark.parametrize("text", [
    '{"a":' * 100_000 + "1" + "}" * 100_000,
    "[" * 100_000 + "]" * 100_000,
    '{"tasks": [' + '{"type": "FORK_JOIN", "forkTasks": [[' * 50_000 + "]]}" * 50_000 + "]}",
    "a: " + "[" * 100_000 + "]" * 100_000,
    "a: " + "{b: " * 5_000 + "1" + "}" * 5_000,
    "a:\n  " + "- " * 100_000 + "x\n",
    "a: " + "[" * 33 + "]" * 33,
    '{"a":' * 33 + "1" + "}" * 33,
])
def test_deeply_nested_documents_are_invalid_arguments_not_recursion_errors(text: str) -> None:
    began = time.perf_counter()
    error = refused(lambda: parse_document(text))
    assert time.perf_counter() - began < 1.0
    assert "nest" in str(error), error


def test_documents_at_the_depth_limit_are_read() -> None:
    assert parse_document('{"a":' * 32 + "1" + "}" * 32)["a"]["a"]["a"]
    assert parse_document("a: " + "[" * 31 + "]" * 31)["a"] == json.loads("[" * 31 + "]" * 31)


def test_data_nested_too_deep_in_a_definition_names_where() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = {"k": deep}
    problems = problems_of(wf(simple("x", inputParameters={"d": deep})))
    assert problems == ["workflow definition: lists and objects nest deeper than the limit of 32 levels (at "
                        "tasks[0].inputParameters.d" + ".k" * 28 + ")"]


def test_yaml_aliases_cannot_blow_up_into_billions_of_values() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(8)]
    began = time.perf_counter()
    error = refused(lambda: parse_document("\n".join(lines) + "\n"))
    assert time.perf_counter() - began < 1.0
    assert "more than the limit of 200000 values" in str(error)
    assert "nest deeper than the limit" in str(refused(lambda: parse_document("a: &x [*x]\n")))


def test_values_yaml_reads_that_json_cannot_carry_are_refused() -> None:
    problems = problems_of(parse_document("name: t\ntasks:\n  - {name: a, taskReferenceName: x, "
                                          "inputParameters: {when: 2025-01-01}}\n"))
    assert problems == ["workflow definition: tasks[0].inputParameters.when: datetime.date(2025, 1, 1) (date) is not a "
                        "JSON value; quote it to make it text"]


def test_a_huge_integer_in_a_document_is_an_invalid_argument() -> None:
    assert "neither valid JSON nor valid YAML" in str(refused(lambda: parse_document("a: " + "9" * 5000)))


# ================================================================ 4. fan-out

def dynamic_fork(**fork: Any) -> dict[str, Any]:
    return wf({"type": "FORK_JOIN_DYNAMIC", "taskReferenceName": "fan", **fork},
              {"type": "JOIN", "taskReferenceName": "join"}, simple("after"))


BY_NAME = {"forkTaskName": "a", "forkTaskInputs": "${workflow.input.items}"}
BY_SPECS = {"dynamicForkTasksParam": "tasks", "dynamicForkTasksInputParamName": "inputs",
            "inputParameters": {"tasks": "${workflow.input.tasks}", "inputs": "${workflow.input.inputs}"}}


@pytest.mark.parametrize("form", ["by name", "by specs"])
def test_a_dynamic_fork_over_the_limit_fails_its_task_quickly(form: str) -> None:
    count = 100_000
    run_input: dict[str, Any]
    if form == "by name":
        sim, run_input = Sim(dynamic_fork(**BY_NAME), DEFS), {"items": list(range(count))}
    else:
        sim = Sim(dynamic_fork(**BY_SPECS), DEFS)
        run_input = {"tasks": [{"name": "a", "taskReferenceName": f"b{i}"} for i in range(count)], "inputs": {}}
    sim.start(run_input)
    began = time.perf_counter()
    decision = sim.decide("wf")   # must not raise
    assert time.perf_counter() - began < 0.5
    fan = sim.task("fan")
    assert fan.runtime.status == st.FAILED_WITH_TERMINAL_ERROR
    assert "'fan': dynamic fork of 100000 branches exceeds the limit of 1000" in fan.runtime.reason
    assert decision.status == st.FAILED and len(decision.new_tasks) == 1 and not decision.enqueue
    assert "dynamic fork of 100000 branches exceeds the limit of 1000" in sim.workflows["wf"].reason


def test_a_dynamic_fork_at_the_limit_runs() -> None:
    sim = Sim(dynamic_fork(**BY_NAME), DEFS)
    sim.start({"items": list(range(limits.MAX_DYNAMIC_FORK))})
    decision = sim.decide("wf")
    assert len(decision.enqueue) == limits.MAX_DYNAMIC_FORK == 1000


def test_an_optional_dynamic_fork_over_the_limit_lets_the_flow_go_on() -> None:
    sim = Sim(dynamic_fork(**BY_NAME, optional=True), DEFS)
    sim.start({"items": list(range(1001))})
    assert sim.run().status == st.COMPLETED
    assert sim.statuses() == {"fan": st.COMPLETED_WITH_ERRORS, "join": st.TASK_COMPLETED, "after": st.TASK_COMPLETED}


def test_a_static_fork_or_literal_inputs_over_the_limit_are_refused_at_registration() -> None:
    branches = [[simple(f"b{i}")] for i in range(1001)]
    problems = problems_of(wf({"type": "FORK_JOIN", "taskReferenceName": "fork", "forkTasks": branches},
                              {"type": "JOIN", "taskReferenceName": "join"}))
    assert problems == ["task 'fork' (tasks[0]): 'forkTasks' has 1001 branches, more than the limit of 1000; "
                        "fork fewer branches or use a SUB_WORKFLOW per group"]
    assert problems_of(wf({"type": "FORK_JOIN", "taskReferenceName": "fork", "forkTasks": branches[:1000]},
                          {"type": "JOIN", "taskReferenceName": "join"})) == []
    problems = problems_of(dynamic_fork(forkTaskName="a", forkTaskInputs=list(range(1001))))
    assert problems == ["task 'fan' (tasks[0]): 'forkTaskInputs' has 1001 items, more than the limit of 1000 branches"]


def loop_over(items: Any, cap: int = 3) -> dict[str, Any]:
    return wf({"type": "DO_WHILE", "taskReferenceName": "loop", "items": items, "maxIterations": cap,
               "loopOver": [simple("each", inputParameters={"item": "${loop.output.item}"})]}, simple("after"))


def test_loop_items_beyond_max_iterations_fail_the_loop_instead_of_being_dropped() -> None:
    sim = Sim(loop_over("${workflow.input.items}"), DEFS)
    sim.start({"items": list(range(100_000))})
    began = time.perf_counter()
    assert sim.run().status == st.FAILED
    assert time.perf_counter() - began < 0.5
    loop = sim.task("loop")
    assert loop.runtime.status == st.FAILED_WITH_TERMINAL_ERROR and not loop.spec.extra
    assert loop.runtime.reason == ("'items' has 100000 elements, more than maxIterations (3); raise maxIterations "
                                   "(at most 1000) or loop over batches")
    sim = Sim(loop_over("${workflow.input.items}"), DEFS)
    sim.start({"items": ["a", "b", "c"]})
    assert sim.run().status == st.COMPLETED and sim.task("each__3").spec.input == {"item": "c"}


def test_literal_loop_items_beyond_max_iterations_are_refused_at_registration() -> None:
    assert problems_of(loop_over([1, 2, 3, 4])) == [
        "task 'loop' (tasks[0]): 'items' has 4 elements, more than 'maxIterations' (3)"]


def test_a_loop_condition_still_stops_at_max_iterations() -> None:
    sim = Sim(wf({"type": "DO_WHILE", "taskReferenceName": "loop", "loopCondition": "true", "maxIterations": 3,
                  "loopOver": [{"type": "NOOP", "taskReferenceName": "n"}]}), DEFS)
    sim.start()
    assert sim.run().status == st.COMPLETED and sim.task("loop").output == {"iteration": 3, "stoppedByCap": True}


# ================================================================ 5. the expression language's work budget

BIG = 200_000
BIG_ROOT: dict[str, Any] = {
    "items": list(range(BIG)), "items2": list(range(BIG)), "strs": [str(i) for i in range(BIG)],
    "obj": {str(i): i for i in range(BIG)}, "obj2": {str(i): i for i in range(BIG)},
    "nested": [[i] for i in range(BIG)], "nested2": [[i] for i in range(BIG)],
    "empties": [[] for _ in range(BIG)], "s": "x" * 1_000_000, "s2": "x" * 1_000_000,
    "text": "ab" * 400_000, "spaces": " " * 1_000_000 + "1",
    "medium": list(range(40_000)), "medium2": list(range(40_000)), "umlauts": "ß" * 500_000,
}
EXPRESSIONS = [
    "sum($.items)", "len($.items)", "keys($.obj)", "len(keys($.obj))", "contains($.items, -1)", "contains($.strs, 'x')",
    "contains($.nested, [-1])", "$.items == $.items2", "$.nested == $.nested2", "$.obj == $.obj2",
    "$.empties == $.empties", "max($.items)", "min($.strs)", "str($.items)", "str($.obj)", "len(str($.nested))",
    "$.s < $.s2", "$.s == $.s2", "lower($.s)", "upper($.text)", "contains($.s, 'y')", "$.items + $.items2",
    "$.s + $.s2", "$.text + $.text", "'' + $.items", "num($.spaces)", "sum($.medium)", "$.medium == $.medium2",
    "[" + ", ".join(["$.medium == $.medium2"] * 40) + "]",
    "[" + ", ".join(["$.text + $.text"] * 100) + "]",
    "[" + ", ".join(["num($.spaces)"] * 200) + "]",
    "len(" + " + ".join(["$.text"] * 200) + ")",
    "[" + ", ".join(["lower($.s)"] * 100) + "]",
    "[" + ", ".join(["contains($.medium, -1)"] * 100) + "]",
    "[" + ", ".join(["keys($.obj)"] * 100) + "]",
    "[" + ", ".join(["$.items + [1]"] * 100) + "]",
    "[" + ", ".join(["upper($.umlauts)"] * 100) + "]",
    "[" + ", ".join(["lower($.umlauts)"] * 100) + "]",
]


@pytest.mark.parametrize("source", EXPRESSIONS, ids=[e[:40] for e in EXPRESSIONS])
def test_any_expression_over_any_input_is_bounded(source: str) -> None:
    """Each finishes well under 100 ms, with a value or a clear SafeExpressionError."""
    def run() -> None:
        try:
            evaluate(source, BIG_ROOT)
        except SafeExpressionError as error:
            assert "limit" in str(error)
    assert quickest(run) < 0.1


@pytest.mark.parametrize("source", ["sum($.items)", "$.items == $.items2", "contains($.items, -1)", "max($.items)",
                                    "str($.items)", "$.nested == $.nested2",
                                    "[" + ", ".join(["keys($.obj)"] * 100) + "]"])
def test_work_on_too_much_data_is_a_clear_expression_error(source: str) -> None:
    with pytest.raises(SafeExpressionError) as info:
        evaluate(source, BIG_ROOT)
    assert (f"evaluation goes through too much data: more than the limit of {safe_expr.MAX_WORK} units of work "
            f"(about one per list item or object entry, or per {safe_expr.CHARS_PER_UNIT} characters); give the task "
            "less data or do this in a worker") in str(info.value)


def test_ordinary_data_stays_well_within_the_budget() -> None:
    root = {"items": list(range(10_000)), "words": [f"w{i}" for i in range(10_000)], "s": "x" * 100_000}
    assert evaluate("sum($.items)", root) == sum(range(10_000))
    assert evaluate("contains($.words, 'w9999') && max($.items) == 9999", root) is True
    assert evaluate("len(str($.items)) > 0 && $.items == $.items ? len(lower($.s)) : 0", root) == 100_000


def test_the_budget_charges_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safe_expr, "MAX_WORK", 10)
    assert evaluate("sum($.l)", {"l": list(range(10))}) == 45
    with pytest.raises(SafeExpressionError, match="at column 1: evaluation goes through too much data"):
        evaluate("sum($.l)", {"l": list(range(11))})
    assert evaluate("len($.l)", {"l": list(range(1000))}) == 1000   # len costs nothing extra
    assert evaluate("$.s == $.s", {"s": "x" * 2560}) is True       # 10 units of 256 characters
    with pytest.raises(SafeExpressionError, match="too much data"):
        evaluate("$.s == $.t", {"s": "x" * 2816, "t": "x" * 2816})


def test_building_big_values_is_refused_before_they_are_built() -> None:
    root = {"s": "x" * 600_000}
    with pytest.raises(SafeExpressionError, match="string longer than the limit of 1048576"):
        evaluate("$.s + $.s", root)
    # each result is small enough, but together they would be 100 MB: the budget stops them
    with pytest.raises(SafeExpressionError, match="too much data"):
        evaluate("[" + ", ".join(["$.s + 'y'"] * 200) + "]", root)


def test_an_inline_task_over_huge_input_fails_that_task_quickly() -> None:
    sim = Sim(wf({"type": "INLINE", "taskReferenceName": "total", "expression": "sum($.items)",
                  "inputParameters": {"items": "${workflow.input.items}"}}, simple("after")), DEFS)
    sim.start({"items": list(range(BIG))})
    began = time.perf_counter()
    sim.decide("wf")
    assert time.perf_counter() - began < 0.5
    total = sim.task("total")
    assert total.runtime.status == st.FAILED_WITH_TERMINAL_ERROR and "too much data" in total.runtime.reason
    assert sim.workflows["wf"].status == st.FAILED


# ================================================================ 6. workflows that start workflows

CHILD = {"name": "child", "tasks": [simple("inner")]}


def test_a_sub_workflow_at_the_depth_limit_fails_instead_of_starting_a_child() -> None:
    sim = Sim(wf({"type": "SUB_WORKFLOW", "taskReferenceName": "sub", "subWorkflowParam": {"name": "child"}}),
              DEFS, {"child:0": CHILD})
    sim.start().depth = limits.MAX_SUBWORKFLOW_DEPTH
    decision = sim.decide("wf")
    assert not decision.start_workflows
    sub = sim.task("sub")
    assert sub.runtime.status == st.FAILED_WITH_TERMINAL_ERROR
    assert sub.runtime.reason.startswith("sub-workflow 'child' not started: this workflow is already 16 workflows "
                                         "deep, the limit is 16")
    assert sim.workflows["wf"].status == st.FAILED


def test_a_child_is_one_deeper_than_its_parent() -> None:
    sim = Sim(wf({"type": "SUB_WORKFLOW", "taskReferenceName": "sub", "subWorkflowParam": {"name": "child"}}),
              DEFS, {"child:0": CHILD})
    sim.start().depth = limits.MAX_SUBWORKFLOW_DEPTH - 1
    [start] = sim.decide("wf").start_workflows
    assert start.depth == limits.MAX_SUBWORKFLOW_DEPTH
    assert sim.workflows[start.workflow_id].depth == limits.MAX_SUBWORKFLOW_DEPTH
    assert new_child(NewWorkflow("c", "child", 1, {}, "", "p|t", {"workflow": sim.sub_workflows["child:0"],
                                                                  "taskDefs": DEFS, "subWorkflows": {}}, depth=3),
                     START).depth == 3


def test_a_runaway_chain_of_sub_workflows_stops_at_the_depth_limit() -> None:
    """A cycle registration could not see (here: put straight into the snapshot) ends, and fails upwards."""
    sim = Sim(wf({"type": "SUB_WORKFLOW", "taskReferenceName": "sub", "subWorkflowParam": {"name": "child"}}),
              DEFS, {"child:0": CHILD})
    looping, _ = validate_workflow_def({"name": "child", "tasks": [
        {"type": "SUB_WORKFLOW", "taskReferenceName": "again", "subWorkflowParam": {"name": "child"}}]}, DEFS,
        {"child": CHILD})
    sim.sub_workflows["child:0"] = looping
    sim.start()
    assert sim.run(max_steps=2000).status == st.FAILED
    assert len(sim.workflows) == 1 + limits.MAX_SUBWORKFLOW_DEPTH
    deepest = max(sim.workflows.values(), key=lambda w: w.depth)
    assert deepest.depth == 16 and "the limit is 16" in deepest.reason
    assert all(w.status == st.FAILED for w in sim.workflows.values())


def test_no_failure_workflow_is_started_beyond_the_depth_limit() -> None:
    sim = Sim(wf(simple("x"), failureWorkflow="child"), DEFS, {"child:0": CHILD})
    sim.start().depth = limits.MAX_SUBWORKFLOW_DEPTH
    assert sim.run(lambda task: ("FAILED_WITH_TERMINAL_ERROR", "broken")).status == st.FAILED
    assert list(sim.workflows) == ["wf"]
    assert sim.workflows["wf"].reason.endswith("(failure workflow 'child' not started: this workflow is already 16 "
                                               "workflows deep, the limit is 16)")


def sub(name: str) -> dict[str, Any]:
    return {"type": "SUB_WORKFLOW", "taskReferenceName": f"run_{name}", "subWorkflowParam": {"name": name}}


def test_a_workflow_that_would_run_itself_through_others_is_refused() -> None:
    registered = {"B": {"name": "B", "tasks": [sub("C")]},
                  "C": {"name": "C", "tasks": [simple("x")], "failureWorkflow": "A"},
                  "D": {"name": "D", "tasks": [sub("D")]}}   # a cycle of its own, not through A
    problems = problems_of({"name": "A", "tasks": [sub("B")]}, registered)
    assert problems == ["workflow 'A': workflow 'A' would run itself: A -> B -> C -> A (through sub-workflows and "
                        "failureWorkflow); a workflow must not start itself, directly or through others"]
    assert "A -> A" in problems_of({"name": "A", "tasks": [sub("A")]}, {"A": {"name": "A", "tasks": [simple("x")]}})[-1]
    assert problems_of({"name": "A", "tasks": [sub("D")]}, registered) == []
    assert problems_of({"name": "A", "tasks": [sub("B")]}, {"B": registered["B"], "C": {"name": "C", "tasks": [
        simple("x")]}}) == []
    # Backwards compatible: only the names A itself uses, as before (the cycle is then out of sight).
    assert problems_of({"name": "A", "tasks": [sub("B")]}, {"B": registered["B"]}) == []


def test_the_shortest_cycle_is_named_and_the_search_is_linear() -> None:
    registered = {f"w{i}": {"name": f"w{i}", "tasks": [sub(f"w{i + 1}")]} for i in range(5000)}
    registered["w5000"] = {"name": "w5000", "tasks": [sub("A")]}
    registered["w2"] = {"name": "w2", "tasks": [sub("w3"), sub("A")]}
    began = time.perf_counter()
    assert workflow_cycle("A", {"name": "A", "tasks": [sub("w0")]}, registered) == ["A", "w0", "w1", "w2", "A"]
    assert time.perf_counter() - began < 1.0


def test_workflows_to_fetch_lists_what_the_caller_still_needs_for_the_cycle_check() -> None:
    store = {"B": {"name": "B", "tasks": [sub("C")]}, "C": {"name": "C", "tasks": [sub("A")]}}
    raw = {"name": "A", "tasks": [sub("B")]}
    fetched: dict[str, Any] = {}
    while missing := workflows_to_fetch(raw, fetched):
        fetched.update({name: store.get(name) for name in missing})
    assert fetched == store and "A -> B -> C -> A" in problems_of(raw, fetched)[-1]
    raw = {"name": "A", "tasks": [sub("B"), sub("ghost")]}
    fetched = {}
    while missing := workflows_to_fetch(raw, fetched):
        fetched.update({name: store.get(name) for name in missing})
    assert fetched == {**store, "ghost": None}
    problems = problems_of(raw, fetched)
    assert "no workflow definition named 'ghost' is registered" in problems[0] and "A -> B -> C -> A" in problems[-1]

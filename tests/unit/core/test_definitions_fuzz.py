"""The validator answers every definition: problems or acceptance, never a crash (issue 22 item 12).

A SWITCH whose `expression` was a list, a FORK_JOIN_DYNAMIC whose `dynamicForkTasksParam` was a
list and a lone surrogate in `description` were answered INTERNAL instead of INVALID_ARGUMENT.
Rather than those three cases, the class: valid definitions (the examples, the Conductor corpus
when it is beside the checkout, and one of every task type built here) with any field at any
depth replaced by arbitrary JSON (wrong types, lone surrogates, huge and non-finite numbers,
nesting up to the limits, keys of every field the validator reads), then

- `check_workflow_def` returns (never raises), every problem is one line of text a gRPC status
  can carry;
- `normalise_workflow_def` raises nothing but InvalidArgument;
- what it accepts can be stored and answered: JSON without NaN, UTF-8, a protobuf Struct; and the
  helpers the API runs on a definition before and after checking it (`referenced_task_names`,
  `workflows_to_fetch`, `waited_topics`, ...) answer too.

The same for task definitions. On a real node, the issue's cases through gRPC and REST:
tests/integration/core/test_definitions_fuzz_on_node.py.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.definitions import (CONDUCTOR_TASK_FIELDS, COMMON_TASK_FIELDS, KIND_FIELDS, TASK_KINDS,
                                           WORKFLOW_DEF_DEFAULTS, WORKFLOW_KEPT_FIELDS, WORKFLOW_UNENFORCED,
                                           check_task_def, check_workflow_def, needs_every_task_def,
                                           needs_every_workflow_def, normalise_task_def, normalise_workflow_def,
                                           parse_document, referenced_task_names, snapshot_workflow_refs,
                                           waited_topics, workflow_cycle, workflows_to_fetch)
from orchestrator.core.errors import InvalidArgument
from orchestrator.core.limits import MAX_DOCUMENT_DEPTH
from orchestrator.core.payloads import require_text_keys
from orchestrator_api.structs import to_struct

ROOT = Path(__file__).resolve().parents[3]
CORPUS = next((p for p in (ROOT.parent / "shared" / "conductor-corpus", Path("/work/shared/conductor-corpus"))
               if p.is_dir()), None)

TASK_DEF_NAMES = ("fetch", "charge", "refund", "quote", "notify", "ship", "pack", "book_flight", "cancel_flight")


def _task_defs() -> dict[str, Any]:
    raw: list[dict[str, Any]] = [{"name": n} for n in TASK_DEF_NAMES]
    for path in (ROOT / "examples" / "task_defs.json", ROOT / "deploy" / "demo" / "task_defs.json"):
        raw += json.loads(path.read_text())
    return {d["name"]: normalise_task_def(d) for d in raw}


TASK_DEFS = _task_defs()
CHILD = normalise_workflow_def({"name": "child", "tasks": [{"name": "n", "taskReferenceName": "n", "type": "NOOP"}]},
                               TASK_DEFS)
WORKFLOW_DEFS: dict[str, Any] = {"child": CHILD}


def t(ref: str, kind: str = "SIMPLE", name: str = "fetch", **fields: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "type": kind, **fields}


# One of every task type, in the shapes the validator knows (ours and Conductor's).
BUILT_IN: list[dict[str, Any]] = [
    {"name": "every_kind", "description": "d", "version": 2, "inputParameters": ["x"],
     "timeoutSeconds": 60, "timeoutPolicy": "ALERT_ONLY", "failureWorkflow": "child", "variables": {"v": 1},
     "outputParameters": {"out": "${fetch1.output.x}"},
     "tasks": [
         t("fetch1", inputParameters={"x": "${workflow.input.x}"}, optional=True, startDelay=1, retryCount=2,
           compensation={"name": "refund", "inputParameters": {"id": "${fetch1.output.id}"}}),
         t("embedded", name="custom_one", taskDefinition={"retryCount": 1, "responseTimeoutSeconds": 5}),
         t("noop", "NOOP"), t("setv", "SET_VARIABLE", inputParameters={"a": 1}),
         t("inline", "INLINE", expression="$.a + 1", evaluatorType="expression", inputParameters={"a": 1}),
         t("inline_js", "INLINE", inputParameters={"evaluatorType": "javascript", "expression": "$.a", "a": 2}),
         t("inline_vp", "INLINE", expression="a", evaluatorType="value-param", inputParameters={"a": 2}),
         t("lam", "LAMBDA", scriptExpression="return {x: $.a};", inputParameters={"a": 1}),
         t("jq", "JSON_JQ_TRANSFORM", inputParameters={"queryExpression": ".a + 1", "a": 1}),
         t("dyn", "DYNAMIC", dynamicTaskNameParam="which", inputParameters={"which": "fetch"}),
         t("wait_d", "WAIT", duration=5), t("wait_u", "WAIT", until=1_700_000_000_000),
         t("wait_in", "WAIT", inputParameters={"duration": "10s"}),
         t("wait_ev", "WAIT", inputParameters={"event": "orders"}),
         t("human", "HUMAN"),
         t("sub", "SUB_WORKFLOW", subWorkflowParam={"name": "child", "version": 1}),
         t("sub_inline", "SUB_WORKFLOW", subWorkflowParam={"name": "inner", "version": 1, "workflowDefinition": {
             "name": "inner", "tasks": [t("inner_noop", "NOOP")]}}),
         t("sub_dyn", "SUB_WORKFLOW", subWorkflowParam={"name": "${workflow.input.child}", "version": 0}),
         t("start", "START_WORKFLOW", inputParameters={"startWorkflow": {"name": "child", "version": 1,
                                                                         "input": {"a": 1}}}),
         t("event", "EVENT", sink="conductor:orders", inputParameters={"a": 1}),
         t("event_sqs", "EVENT", sink="sqs:queue"),
         t("http", "HTTP", inputParameters={"http_request": {"uri": "https://example.org", "method": "GET"}}),
         t("poll", "HTTP_POLL", inputParameters={"http_request": {"uri": "https://example.org", "method": "GET",
                                                                  "terminationCondition": "true"}}),
         t("kafka", "KAFKA_PUBLISH", inputParameters={"kafka_request": {"topic": "t"}}),
         t("fork", "FORK_JOIN", forkTasks=[[t("fa", name="quote")], [t("fb", name="quote")]]),
         t("join", "JOIN", joinOn=["fa", "fb"]),
         t("dfork", "FORK_JOIN_DYNAMIC", dynamicForkTasksParam="tasks", dynamicForkTasksInputParamName="inputs",
           inputParameters={"tasks": "${workflow.input.tasks}", "inputs": "${workflow.input.inputs}"}),
         t("djoin", "JOIN"),
         t("nfork", "FORK_JOIN_DYNAMIC", forkTaskName="ship", forkTaskInputs=[{"i": 1}, {"i": 2}]),
         t("njoin", "JOIN"),
         t("cfork", "FORK_JOIN_DYNAMIC", inputParameters={"forkTaskName": "ship", "forkTaskInputs": [{"i": 1}]}),
         t("cjoin", "JOIN"),
         t("wfork", "FORK_JOIN_DYNAMIC", inputParameters={"forkTaskWorkflow": "child", "forkTaskInputs": [{}]}),
         t("wjoin", "JOIN"),
         t("switch", "SWITCH", evaluatorType="value-param", expression="k", inputParameters={"k": "a"},
           decisionCases={"a": [t("sa", "NOOP")], "b": [t("sb", name="notify")]}, defaultCase=[t("sd", "NOOP")]),
         t("switch_js", "SWITCH", evaluatorType="javascript", expression="$.k == 'a' ? 'a' : 'b'",
           inputParameters={"k": "a"}, decisionCases={"a": [t("sja", "NOOP")]}),
         t("switch_ex", "SWITCH", evaluatorType="expression", expression="$.k", inputParameters={"k": "a"},
           decisionCases={"a": [t("sea", "NOOP")]}),
         t("decision", "DECISION", caseValueParam="k", inputParameters={"k": "a"},
           decisionCases={"a": [t("da", "NOOP")]}),
         t("decision_js", "DECISION", caseExpression="$.k", inputParameters={"k": "a"},
           decisionCases={"a": [t("dja", "NOOP")]}),
         t("loop", "DO_WHILE", loopCondition="$.loop.output.iteration < 3", evaluatorType="expression",
           loopOver=[t("lf", name="fetch")], maxIterations=5),
         t("loop_js", "DO_WHILE", loopCondition="if ($.loop_js['iteration'] < 2) { true; } else { false; }",
           loopOver=[t("ljs", "NOOP")], inputParameters={"keepLastN": 2}),
         t("loop_items", "DO_WHILE", items=[1, 2, 3], loopOver=[t("li", "NOOP")]),
         t("xfork", "FORK_JOIN", forkTasks=[[t("xa", "NOOP")], [t("xb", "NOOP")]]),
         t("xjoin", "EXCLUSIVE_JOIN", joinOn=["xa", "xb"], defaultExclusiveJoinTask=["xa"]),
         t("stop", "TERMINATE", terminationStatus="COMPLETED", terminationReason="done",
           workflowOutput={"a": "${workflow.input.x}"}),
     ]},
    {"name": "conductor_shape", "schemaVersion": 2, "ownerEmail": "a@b.c", "restartable": True,
     "inputTemplate": {"x": 1}, "failureWorkflow": "$workflow.input.fail", "failureWorkflowVersion": 1,
     "workflowStatusListenerEnabled": False,
     "tasks": [
         t("c1", inputParameters={"x": "${workflow.input.x}"}, asyncComplete=False, loopOver=[], joinOn=[]),
         t("c2", "DO_WHILE", loopCondition="$.c2['iteration'] < 2", loopOver=[t("c3", "NOOP")]),
         t("c4", "TERMINATE", inputParameters={"terminationStatus": "FAILED", "terminationReason": "x"}),
     ]},
]


def _one_task_each() -> list[dict[str, Any]]:
    """Every task of BUILT_IN in a definition of its own (a JOIN with its fork): small seeds, so
    that a mutation lands on each field of each type often."""
    tasks = BUILT_IN[0]["tasks"]
    seeds = []
    for index, task in enumerate(tasks):
        if task["type"] in ("JOIN", "EXCLUSIVE_JOIN"):
            continue
        group = [task] + ([tasks[index + 1]] if index + 1 < len(tasks) and tasks[index + 1]["type"] in
                          ("JOIN", "EXCLUSIVE_JOIN") else [])
        seeds.append({"name": f"one_{task['taskReferenceName']}", "tasks": copy.deepcopy(group)})
    return seeds


def _seeds() -> list[dict[str, Any]]:
    seeds = [*BUILT_IN, *_one_task_each()]
    for path in sorted([*(ROOT / "examples").glob("*.yaml"), *(ROOT / "deploy" / "demo").glob("*.yaml"),
                        ROOT / "deploy" / "demo" / "three_noops.json"]):
        seeds.append(yaml.safe_load(path.read_text()))
    if CORPUS is not None:
        for path in sorted(CORPUS.glob("*.json"))[:60]:
            try:
                document = json.loads(path.read_text())
            except ValueError:
                continue
            for item in document if isinstance(document, list) else [document]:
                if isinstance(item, dict) and isinstance(item.get("tasks"), list):
                    seeds.append(item)
    return seeds


SEEDS = _seeds()


def test_the_seeds_are_valid_definitions() -> None:
    """Ours must be valid, so that a mutation is what makes a definition invalid (the corpus's
    files may fail for names they need that are not registered here)."""
    for seed in SEEDS[:len(BUILT_IN) + len(_one_task_each())]:
        check = check_workflow_def(seed, TASK_DEFS, WORKFLOW_DEFS)
        assert check.problems == [], check.problems


# ---------------------------------------------------------------- arbitrary JSON

FIELD_NAMES = sorted({*COMMON_TASK_FIELDS, *CONDUCTOR_TASK_FIELDS, *(f for s in KIND_FIELDS.values() for f in s),
                      *WORKFLOW_DEF_DEFAULTS, *WORKFLOW_KEPT_FIELDS, *WORKFLOW_UNENFORCED, "name", "tasks",
                      # what the validator reads inside inputParameters and other objects
                      "expression", "evaluatorType", "scriptExpression", "queryExpression", "terminationStatus",
                      "event", "duration", "until", "startWorkflow", "forkTaskName", "forkTaskInputs",
                      "forkTaskWorkflow", "forkTaskType", "forkTaskWorkflowVersion", "items", "keepLastN",
                      "http_request", "version", "workflowDefinition", "dynamicForkJoinTasksParam"})
INTERESTING_TEXT = [
    "", " ", "a", "fetch", "child", "workflow", "${", "${workflow.input.x}", "${fetch1.output.x}", "$${x}",
    "${later.output}", "$workflow.input.x", "$.x > 1", "$.loop.output.iteration < 3", "function(){", "12", "1e999",
    "-1", "NaN", "value-param", "javascript", "graaljs", "expression", "COMPLETED", "FAILED", "conductor:orders",
    "sqs:q", "team-a:x", "a\nb", "\x00", "é", "\U0001f600", "\ud800", "\udfff", "a\udc80b", "x" * 300,
    "${" + "a." * 50 + "b}", "\u00b2", " 7 ", "9" * 20, "1" * 5000, "10s", "2024-01-01 10:00 UTC", *TASK_KINDS]
NUMBERS = st.one_of(
    st.integers(-3, 3), st.integers(-(2**64), 2**64), st.integers(min_value=10**300, max_value=10**400),
    st.integers(max_value=-(10**300), min_value=-(10**400)), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**53 + 1, 1e308, -0.0, 0.5]))
TEXT = st.one_of(st.sampled_from(INTERESTING_TEXT),
                 st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=12))
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), TEXT)
YAML_KEYS = st.one_of(KEYS, st.integers(-2, 2), st.booleans(), st.none())   # YAML reads `1:` as a number
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)


def _nested(depth: int, leaf: Any, as_list: bool) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


JSON = st.one_of(
    SCALARS,   # most often a value of the wrong type or range where a field was
    st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                 max_leaves=12),
    # deep, near and beyond the limit
    st.builds(_nested, st.integers(1, MAX_DOCUMENT_DEPTH + 2), SCALARS, st.booleans()),
    # a task where a value was, and lists of tasks where a task list was
    st.builds(lambda ref, kind: t(ref, kind), TEXT, st.sampled_from(TASK_KINDS)),
    st.lists(st.builds(lambda ref, kind: t(ref, kind), TEXT, st.sampled_from(TASK_KINDS)), max_size=3))


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside `value` (the root excluded)."""
    out: list[tuple[Any, ...]] = []
    stack = [(value, path)]
    while stack:
        current, at = stack.pop()
        items = current.items() if isinstance(current, dict) else enumerate(current) if isinstance(current, list) \
            else ()
        for key, item in items:
            out.append((*at, key))
            stack.append((item, (*at, key)))
    return out


def _containers(value: Any) -> list[tuple[Any, ...]]:
    """Paths to every object in `value`, the root included."""
    return [()] + [p for p in _places(value) if isinstance(_at(value, p), dict)]


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A seed with one to three changes: a value replaced, a field added (any key, often one the
    validator reads), a field removed, a task's type changed."""
    definition = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["replace", "replace", "add", "remove", "retype"]))
        if action == "replace" and (places := _places(definition)):
            path = draw(st.sampled_from(places))
            _at(definition, path[:-1])[path[-1]] = draw(JSON)
        elif action == "add":
            holder = _at(definition, draw(st.sampled_from(_containers(definition))))
            holder[draw(YAML_KEYS)] = draw(JSON)
        elif action == "retype":   # a task's fields read as another type's
            tasks = [p for p in _containers(definition) if "taskReferenceName" in _at(definition, p)]
            if tasks:
                _at(definition, draw(st.sampled_from(tasks)))["type"] = draw(st.sampled_from(TASK_KINDS))
        elif action == "remove":
            holder = _at(definition, draw(st.sampled_from(_containers(definition))))
            if holder:
                del holder[draw(st.sampled_from(sorted(holder, key=repr)))]
    return definition


def _one_line_text(problem: Any) -> None:
    assert isinstance(problem, str) and problem
    problem.encode("utf-8")   # a gRPC status and a JSON answer carry it


def _storable(definition: Any) -> None:
    """What is accepted is stored as JSON (UTF-8, no NaN) and answered as a protobuf Struct."""
    json.dumps(definition, allow_nan=False, ensure_ascii=False).encode("utf-8")
    to_struct(definition)


def answers(raw: dict[str, Any], *, twice: bool = True) -> None:
    # what the API runs on a definition before it is checked: the names it looks up in the store
    for name in (*referenced_task_names(raw), *workflows_to_fetch(raw, {}), *workflows_to_fetch(raw, WORKFLOW_DEFS)):
        name.encode("utf-8")   # a Redis key
    check = check_workflow_def(raw, TASK_DEFS, WORKFLOW_DEFS)
    for problem in check.problems:
        _one_line_text(problem)
    for warning in check.warnings:
        _one_line_text(warning)
    try:   # (not compared with `check`: a JavaScript syntax check can time out on a loaded machine)
        if twice:
            normalise_workflow_def(raw, TASK_DEFS, WORKFLOW_DEFS)
    except InvalidArgument as refused:
        str(refused).encode("utf-8")
    if check.problems:
        return
    definition = check.definition
    try:
        require_text_keys(raw, "definition")   # the API refuses a key that is not text before checking
    except InvalidArgument:
        return
    _storable(definition)
    # what runs on an accepted definition: registration, snapshots, starting it
    waited_topics(definition)
    snapshot_workflow_refs(definition)
    needs_every_workflow_def(definition)
    needs_every_task_def(definition)
    workflow_cycle(definition["name"], definition, WORKFLOW_DEFS)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_any_field_at_any_depth_gets_a_validation_answer(raw: dict[str, Any]) -> None:
    answers(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(KEYS, JSON, max_size=6))
def test_any_object_gets_a_validation_answer(raw: dict[str, Any]) -> None:
    answers(raw)


WRONG = [None, True, 0, -1, 1.5, 10**400, math.nan, math.inf, "", "x", "\u00b2", "1" * 5000, "${workflow.input.x}",
         "\ud800", [], ["a"], [t("zz", "NOOP")], {}, {"a": 1}]
"""A value of every wrong kind: what a field of another type, a typo or a hostile caller gives."""


def test_every_field_of_every_task_type_with_every_wrong_value() -> None:
    """Systematic where the properties above are random: each small seed with every value (at
    any depth) replaced by each of WRONG, and every field the validator reads added to each task
    (and the definition) with a third of them."""
    for seed in [*_one_task_each(), BUILT_IN[1]]:
        for path in _places(seed):
            for value in WRONG:
                raw = copy.deepcopy(seed)
                _at(raw, path[:-1])[path[-1]] = value
                answers(raw, twice=False)
        for holder in [p for p in _containers(seed) if p == () or "taskReferenceName" in _at(seed, p)]:
            for field in FIELD_NAMES:
                for value in WRONG[::3]:
                    raw = copy.deepcopy(seed)
                    _at(raw, holder)[field] = value
                    answers(raw, twice=False)


TASK_DEF_SEED = {"name": "fetch", "description": "d", "retryCount": 2, "retryLogic": "EXPONENTIAL_BACKOFF",
                 "retryDelaySeconds": 1, "backoffScaleFactor": 2, "maxRetryDelaySeconds": 30,
                 "responseTimeoutSeconds": 10, "timeoutSeconds": 60, "timeoutPolicy": "RETRY",
                 "rateLimitPerFrequency": 1, "rateLimitFrequencyInSeconds": 1, "concurrentExecLimit": 2,
                 "inputTemplate": {"a": 1}, "pollTimeoutSeconds": 5, "ownerEmail": "a@b.c",
                 "totalTimeoutSeconds": 0, "inputKeys": ["a"]}


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_any_task_definition_gets_a_validation_answer(data: st.DataObject) -> None:
    raw = dict(TASK_DEF_SEED)
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.sampled_from(sorted(TASK_DEF_SEED)) | KEYS)] = data.draw(JSON)
    definition, problems, warnings = check_task_def(raw)
    for line in (*problems, *warnings):
        _one_line_text(line)
    try:
        normalise_task_def(raw)
    except InvalidArgument as refused:
        str(refused).encode("utf-8")
    if not problems:
        _storable(definition)


@pytest.mark.parametrize("raw", [
    {"name": "w", "tasks": [t("s", "SWITCH", expression=["a"], decisionCases={"a": [t("n", "NOOP")]})]},
    {"name": "w", "tasks": [t("f", "FORK_JOIN_DYNAMIC", dynamicForkTasksParam=["a"],
                              dynamicForkTasksInputParamName="b", inputParameters={"b": 1}), t("j", "JOIN")]},
    {"name": "w", "description": "\ud800", "tasks": [t("n", "NOOP")]},
    {"name": "w", "tasks": [t("n", "NOOP", inputParameters={"\udfff": 1})]},
    {"name": "w", "metadata": {"big": 10**400}, "tasks": [t("n", "NOOP")]},
    {"name": "w", "tasks": [t("s", "SUB_WORKFLOW", subWorkflowParam={"name": "a\udc00"}),
                            t("c", name="\ud800x", compensation={"name": "\ud800"})]},
], ids=["switch-expression-list", "fork-param-list", "description-surrogate", "key-surrogate", "huge-int",
        "looked-up-names-surrogate"])
def test_the_issues_cases_are_problems(raw: dict[str, Any]) -> None:
    check = check_workflow_def(raw, TASK_DEFS, WORKFLOW_DEFS)
    assert check.problems
    answers(raw)


def test_a_document_with_a_lone_surrogate_is_a_problem_naming_where() -> None:
    """JSON escapes can spell a lone surrogate; it cannot be stored as UTF-8."""
    document = parse_document('{"name": "w", "description": "\\ud800", "tasks": []}')
    problems = check_workflow_def(document, TASK_DEFS).problems
    assert any("description" in p and "surrogate" in p for p in problems), problems


def test_non_finite_numbers_stay_problems() -> None:
    """A guard that the property above does not pass by accident: NaN is refused where it is read."""
    raw = {"name": "w", "tasks": [t("n", "WAIT", duration=math.nan)]}
    assert check_workflow_def(raw, TASK_DEFS).problems
    with pytest.raises(InvalidArgument):
        normalise_workflow_def(raw, TASK_DEFS)

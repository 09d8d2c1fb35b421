"""One function per task kind: given the walk and a definition node, advance it.

Each returns an Outcome: DONE (the next node may run), BLOCKED (waiting for a worker,
a timer, a signal or a child workflow), FAILED or TERMINATE. Containers (FORK_JOIN,
FORK_JOIN_DYNAMIC, SWITCH, DO_WHILE) walk their nested task lists with `sequence`.

Nothing here raises out of `decide` on account of data: a value that only shows up at run
time (a WAIT `until`, dynamic fork inputs, loop items, an expression's result) and cannot be
used fails its own task, FAILED_WITH_TERMINAL_ERROR, with a reason naming the value. So does a
script (JavaScript, jq) that fails, runs too long or uses too much memory.

Conductor's ways of writing a task are read here as Conductor runs them: INLINE's and
TERMINATE's and WAIT's parameters inside `inputParameters`, JavaScript evaluators, DECISION,
LAMBDA, JSON_JQ_TRANSFORM, DYNAMIC, START_WORKFLOW, EXCLUSIVE_JOIN, sub-workflows named by
expressions or defined inline, and the DO_WHILE condition's scope and output.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, cast
from collections.abc import Callable

from .. import javascript, jqtransform
from .. import state as m
from .. import statuses as st
from ..errors import InvalidArgument
from ..namespaces import qualified, topic_in
from ..events import is_foreign_sink, topic_name
from ..payloads import encode
from ..definitions import JAVASCRIPT, TERMINATION_STATUSES, iter_nodes, normalise_dynamic_task, wait_literal
from ..limits import MAX_DURATION_SECONDS, MAX_DYNAMIC_FORK, MAX_LOOP_ITERATIONS, MAX_SUBWORKFLOW_DEPTH
from ..schema import WorkflowDef, WorkflowTask
from ..safe_expr import SafeExpressionError, evaluate
from .decision import NewWorkflow
from ..values import seconds_ms
from .walk import BLOCKED, DONE, Outcome, Walk

Visitor = Callable[[Walk, WorkflowTask, str], Outcome]


def sequence(walk: Walk, nodes: list[WorkflowTask], suffix: str) -> Outcome:
    """Run nodes in order; stop at the first that is not DONE."""
    previous: WorkflowTask | None = None
    for node in nodes:
        if node["type"] == "JOIN":   # validation guarantees a fork right before it
            assert previous is not None
            outcome = join(walk, node, suffix, fork_ref=previous["taskReferenceName"])
        else:
            outcome = visit(walk, node, suffix)
        if not outcome.done:
            return outcome
        previous = node
    return DONE


def visit(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    return VISITORS.get(node["type"], simple)(walk, node, suffix)   # other types: workers of that type


# Failures of data and scripts at run time: each fails its own task with the message.
_RUN_TIME_ERRORS = (SafeExpressionError, javascript.JavaScriptError, jqtransform.JqError, ValueError, TypeError,
                    RecursionError)


def _key(node: WorkflowTask, suffix: str) -> str:
    return f"{node['taskReferenceName']}{suffix}"


def _failed_system_task(walk: Walk, node: WorkflowTask, task: m.TaskState) -> Outcome:
    """A system instance that ended badly: retried only by an operator's retry."""
    if task.spec.key in walk.retrying:
        walk.retrying.discard(task.spec.key)
        walk.change(task, status=st.IN_PROGRESS, reason="", ended_at_ms=0)
        return BLOCKED
    return walk.unsuccessful(node, task)


# ---------------------------------------------------------------- worker task

def _worker_type(node: WorkflowTask) -> str:
    """The task type a worker serves to run this node: the task definition's name for SIMPLE,
    the type itself for HTTP and the other I/O types, and for types that are not Conductor's."""
    return node["name"] if node["type"] == "SIMPLE" else node.get("taskType") or node["type"]


def simple(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    key = _key(node, suffix)
    task = walk.latest.get(key)
    name = _worker_type(node)
    if task is None:
        walk.schedule_worker_task(node, key, name, attempt=0, delay_ms=seconds_ms(node["startDelay"]))
        return BLOCKED
    return walk.follow_worker_task(node, task, name)


def dynamic(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    """DYNAMIC: a worker task whose task definition is named by an input parameter."""
    key = _key(node, suffix)
    task = walk.latest.get(key)
    if task is None:
        task_id = walk.new_id()
        inputs = walk.input_for(node, key, task_id)
        param = node["dynamicTaskNameParam"]
        name = inputs.get(param)
        if not isinstance(name, str) or name not in walk.task_defs:
            task = walk.add(node, key, status=st.FAILED_WITH_TERMINAL_ERROR, input=inputs, task_id=task_id,
                            reason=f"'{param}' resolved to {_show(name)}, which names no task definition in this "
                                   "run's snapshot of definitions")
            return walk.unsuccessful(node, task)
        walk.schedule_worker_task(node, key, name, attempt=0, delay_ms=seconds_ms(node["startDelay"]), input=inputs)
        return BLOCKED
    return walk.follow_worker_task(node, task, task.spec.task_type)


# ---------------------------------------------------------------- tasks the decider completes at once

def _instant(walk: Walk, node: WorkflowTask, suffix: str,
             compute: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[Outcome, m.TaskState]:
    """Create and complete a system task in this decision (or report the one already there)."""
    key = _key(node, suffix)
    task = walk.latest.get(key)
    if task is None:
        task_id = walk.new_id()
        inputs = walk.input_for(node, key, task_id)
        try:
            output = compute(inputs)
        except _RUN_TIME_ERRORS as exc:
            task = walk.add(node, key, status=st.FAILED_WITH_TERMINAL_ERROR, input=inputs, reason=str(exc),
                            task_id=task_id)
            return walk.unsuccessful(node, task), task
        task = walk.add(node, key, status=st.TASK_COMPLETED, input=inputs, output=output, task_id=task_id)
    if task.runtime.status in st.DONE_TASK:
        return DONE, task
    return _failed_system_task(walk, node, task), task


def noop(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    return _instant(walk, node, suffix, lambda inputs: {})[0]


def set_variable(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    def apply(inputs: dict[str, Any]) -> dict[str, Any]:
        walk.set_variables(inputs)
        return {}
    return _instant(walk, node, suffix, apply)[0]


def _evaluate(evaluator: Any, source: Any, inputs: dict[str, Any]) -> Any:
    """An expression's value for its evaluator: a safe expression, JavaScript (Conductor's
    `$` = the inputs) or the value of the input it names (value-param)."""
    if evaluator == "expression":
        return evaluate(source, inputs)
    if evaluator in JAVASCRIPT:
        return javascript.evaluate(source, inputs)
    if evaluator == "value-param":
        return inputs.get(source) if isinstance(source, str) else None
    if evaluator is None:
        raise ValueError("'evaluatorType' is required (javascript, graaljs, value-param or expression)")
    raise ValueError(f"'evaluatorType' {_show(evaluator)} is not supported (javascript, graaljs, value-param or "
                     "expression)")


def inline(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    """INLINE: `{"result": value}`. Ours: `expression` (and `evaluatorType`, default the safe
    expression language) on the task; Conductor's: both in inputParameters."""
    def compute(inputs: dict[str, Any]) -> dict[str, Any]:
        if "expression" in node:
            return {"result": _evaluate(node.get("evaluatorType") or "expression", node["expression"], inputs)}
        evaluator = node.get("evaluatorType") or inputs.get("evaluatorType")
        return {"result": _evaluate(evaluator, inputs.get("expression"), inputs)}
    return _instant(walk, node, suffix, compute)[0]


def lambda_(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    """LAMBDA: `scriptExpression` is the body of a JavaScript function; `{"result": its return}`."""
    def compute(inputs: dict[str, Any]) -> dict[str, Any]:
        script = node.get("scriptExpression") or inputs.get("scriptExpression")
        if not isinstance(script, str) or not script.strip():
            raise ValueError("'scriptExpression' resolved to no script")
        return {"result": javascript.evaluate(javascript.lambda_script(script), inputs)}
    return _instant(walk, node, suffix, compute)[0]


def json_jq_transform(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    """JSON_JQ_TRANSFORM: `{"result": first value, "resultList": values}` of the jq program
    `queryExpression` over the task's input."""
    return _instant(walk, node, suffix, jqtransform.transform)[0]


def terminate(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    if "terminationStatus" not in node:   # Conductor's: everything in inputParameters
        return _terminate_by_inputs(walk, node, suffix)
    outcome, task = _instant(walk, node, suffix, lambda inputs: {})
    if not outcome.done:
        return outcome
    reason = walk.resolve(node["terminationReason"]) or f"TERMINATE task '{task.spec.key}'"
    return Outcome("TERMINATE", str(reason), node["terminationStatus"], walk.resolve(node["workflowOutput"]))


def _terminate_by_inputs(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    """TERMINATE as Conductor writes it: `terminationStatus`, `terminationReason` and
    `workflowOutput` in inputParameters. The task's output (and the workflow's) is
    `workflowOutput` when it is an object, else `{"output": workflowOutput}`."""
    def compute(inputs: dict[str, Any]) -> dict[str, Any]:
        status = inputs.get("terminationStatus")
        if status not in TERMINATION_STATUSES:
            raise ValueError(f"'terminationStatus' resolved to {_show(status)}, not one of "
                             f"{', '.join(TERMINATION_STATUSES)}")
        value = inputs.get("workflowOutput")
        if value is None:
            return {}
        return dict(value) if isinstance(value, dict) else {"output": value}
    outcome, task = _instant(walk, node, suffix, compute)
    if not outcome.done:
        return outcome
    if task.runtime.status != st.TASK_COMPLETED:   # optional and failed, or skipped: nothing to end
        return DONE
    inputs = task.spec.input
    reason = inputs.get("terminationReason") or f"TERMINATE task '{task.spec.key}'"
    return Outcome("TERMINATE", str(reason), str(inputs["terminationStatus"]), dict(task.output or {}))


# ---------------------------------------------------------------- tasks that wait

def wait(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    """WAIT for a duration, until a time, or (neither given) until a signal."""
    key = _key(node, suffix)
    task = walk.latest.get(key)
    if task is not None and task.runtime.status in st.UNSUCCESSFUL_TASK and key in walk.retrying \
            and node.get("until") is not None:
        walk.retrying.discard(key)        # an operator's retry resolves `until` again
        task = _start_wait(walk, node, key, task.spec.attempt + 1)
    elif task is None:
        task = _start_wait(walk, node, key, 0)
    return _follow_waiting(walk, node, task)


def _start_wait(walk: Walk, node: WorkflowTask, key: str, attempt: int) -> m.TaskState:
    task_id = walk.new_id()
    inputs = walk.input_for(node, key, task_id)
    try:
        until = _wait_until(walk, node, inputs)
    except ValueError as exc:
        return walk.add(node, key, status=st.FAILED_WITH_TERMINAL_ERROR, attempt=attempt, reason=str(exc),
                        input=inputs, task_id=task_id)
    return walk.add(node, key, status=st.IN_PROGRESS, attempt=attempt, extra={"until": until} if until else {},
                    input=inputs, task_id=task_id)


_EPOCH_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)


def _wait_until(walk: Walk, node: WorkflowTask, inputs: dict[str, Any]) -> int:
    """When the WAIT ends (epoch ms), 0 for a signal; ValueError naming a bad `until`.
    Ours: `duration` (seconds) or `until` (epoch ms) on the task. Conductor's: `duration`
    ("10s", "1 minute") or `until` ("2024-01-01 10:00 UTC") in inputParameters."""
    duration = node.get("duration")
    if duration is not None:
        return walk.now + seconds_ms(duration)
    if node.get("until") is None:
        in_duration, in_until = inputs.get("duration"), inputs.get("until")
        if in_duration is not None and in_until is not None:
            raise ValueError("both 'duration' and 'until' are given; give one")
        if in_duration is not None:
            try:
                return walk.now + wait_literal("duration", in_duration)
            except ValueError as exc:
                raise ValueError(f"'duration' resolved to {_show(in_duration)}: {exc}") from None
        if in_until is not None:
            try:
                until = wait_literal("until", in_until)
            except ValueError as exc:
                raise ValueError(f"'until' resolved to {_show(in_until)}: {exc}") from None
            if until > walk.now + MAX_DURATION_SECONDS * 1000:
                raise ValueError(f"'until' resolved to {_show(in_until)}, more than 10 years ahead")
            return max(until, 1)
        return 0
    value = walk.resolve(node["until"])
    if value is None or (isinstance(value, str) and not value.strip()):
        return walk.now                   # nothing to wait for: a missing time has passed
    shown = _show(value)
    if isinstance(value, str) and _EPOCH_TEXT.fullmatch(value.strip()):
        number: Any = float(value)
    else:
        number = value
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        kind = {dict: "an object", list: "a list", bool: "true/false"}.get(type(value), "text")
        raise ValueError(f"'until' resolved to {kind} ({shown}), not a time in epoch milliseconds "
                         "(a number such as 1767225600000)")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"'until' resolved to {shown}, not a finite time in epoch milliseconds")
    if number < 0:
        raise ValueError(f"'until' resolved to {shown}, a negative time; give epoch milliseconds")
    if number > walk.now + MAX_DURATION_SECONDS * 1000:
        raise ValueError(f"'until' resolved to {shown}, more than 10 years ahead (the limit is "
                         f"{MAX_DURATION_SECONDS} s); give a time in epoch milliseconds")
    return int(number)


def _show(value: Any) -> str:
    """A value in a reason, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False)[:200]
    except (TypeError, ValueError, RecursionError):
        text = repr(value)[:200]
    return text if len(text) <= 60 else text[:57] + "..."


def human(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    key = _key(node, suffix)
    task = walk.latest.get(key) or walk.add(node, key, status=st.IN_PROGRESS)
    return _follow_waiting(walk, node, task)


def _follow_waiting(walk: Walk, node: WorkflowTask, task: m.TaskState) -> Outcome:
    status = task.runtime.status
    if status in st.DONE_TASK:
        return DONE
    if status == st.IN_PROGRESS:
        until = task.spec.extra.get("until")
        if until and walk.now >= until:
            walk.complete(task, {"waitedUntil": until})
            return DONE
        if until:
            walk.decision.wake(until)
        return BLOCKED
    return _failed_system_task(walk, node, task)


def sub_workflow(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    """Start a child workflow in the same write; its end completes or fails this task (in Lua)."""
    key = _key(node, suffix)
    task = walk.latest.get(key)
    if task is not None and task.runtime.status in st.UNSUCCESSFUL_TASK and key in walk.retrying:
        walk.retrying.discard(key)
        task = _start_child(walk, node, key, task.spec.attempt + 1)
    elif task is None:
        task = _start_child(walk, node, key, 0)
    status = task.runtime.status
    if status in st.DONE_TASK:
        return DONE
    if status == st.IN_PROGRESS:
        return BLOCKED
    return walk.unsuccessful(node, task)


def _child_definition(walk: Walk, param: dict[str, Any]) -> tuple[WorkflowDef | None, str]:
    """The definition a SUB_WORKFLOW starts: defined inline, or named (by text or by a `${...}`
    resolved now) in this run's snapshot. (definition, problem)."""
    inline = param.get("workflowDefinition")
    if isinstance(inline, dict):
        return cast(WorkflowDef, inline), ""   # normalised at registration
    name, version = walk.resolve(param["name"]), walk.resolve(param.get("version", 0))
    if isinstance(version, str) and version.strip().isdigit():
        version = int(version)
    version = 0 if version is None else version
    if not isinstance(name, str) or not name:
        return None, f"the sub-workflow's name resolved to {_show(name)}, not a workflow name"
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        return None, f"the sub-workflow's version resolved to {_show(version)}, not 0 (latest) or a version number"
    definition = walk.find_workflow(name, version)
    if definition is None:
        return None, (f"sub-workflow '{name}' version {version or 'latest'} is not in this run's snapshot of "
                      "definitions; register it and restart the workflow")
    return definition, ""


def _start_child(walk: Walk, node: WorkflowTask, key: str, attempt: int) -> m.TaskState:
    definition, problem = _child_definition(walk, dict(node["subWorkflowParam"]))
    if walk.wf.depth >= MAX_SUBWORKFLOW_DEPTH:
        name = definition["name"] if definition is not None else node["subWorkflowParam"]["name"]
        problem = (f"sub-workflow '{name}' not started: this workflow is already {walk.wf.depth} workflows "
                   f"deep, the limit is {MAX_SUBWORKFLOW_DEPTH} (limits.MAX_SUBWORKFLOW_DEPTH); a definition that "
                   "starts itself through its sub-workflows never ends: break the cycle")
    if problem:
        return walk.add(node, key, status=st.FAILED_WITH_TERMINAL_ERROR, attempt=attempt, reason=problem)
    assert definition is not None
    # The child is created in the same atomic write as this task, so naming it after the task
    # makes it unique per execution (a restart or rerun gets a new child, never the old one)
    # and a decision that is refused (a conflict) leaves no child behind.
    task_id = walk.new_id()
    child_id = f"{walk.wf.workflow_id}.{key}.{attempt}.{task_id[:12]}"
    task = walk.add(node, key, status=st.IN_PROGRESS, attempt=attempt, extra={"child": child_id},
                    output={"subWorkflowId": child_id}, task_id=task_id)
    walk.decision.start_workflows.append(NewWorkflow(
        workflow_id=child_id, name=qualified(walk.namespace, definition["name"]), version=definition["version"],
        input=task.spec.input,
        correlation_id=walk.wf.correlation_id, parent=f"{walk.wf.workflow_id}|{task.task_id}",
        snapshot={"workflow": definition, "taskDefs": walk.task_defs, "subWorkflows": walk.sub_workflows},
        depth=walk.wf.depth + 1))
    return task


def start_workflow(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    """START_WORKFLOW: start another workflow and go on at once (fire and forget: the new one
    has no parent); output `{"workflowId": ...}`."""
    started: list[NewWorkflow] = []

    def compute(inputs: dict[str, Any]) -> dict[str, Any]:
        spec = inputs.get("startWorkflow")
        if not isinstance(spec, dict):
            raise ValueError(f"'startWorkflow' resolved to {_show(spec)}, not an object with 'name'")
        definition, problem = _child_definition(walk, {"name": spec.get("name"), "version": spec.get("version")})
        if problem:
            raise ValueError(problem.replace("sub-workflow", "workflow"))
        assert definition is not None
        if walk.wf.depth >= MAX_SUBWORKFLOW_DEPTH:
            raise ValueError(f"workflow '{definition['name']}' not started: this workflow is already "
                             f"{walk.wf.depth} workflows deep, the limit is {MAX_SUBWORKFLOW_DEPTH}")
        workflow_input = spec.get("input") or {}
        if not isinstance(workflow_input, dict):
            raise ValueError(f"'startWorkflow.input' resolved to {_show(workflow_input)}, not an object")
        correlation = spec.get("correlationId")
        workflow_id = walk.new_id()
        started.append(NewWorkflow(
            workflow_id=workflow_id, name=qualified(walk.namespace, definition["name"]),
            version=definition["version"], input=workflow_input,
            correlation_id=correlation if isinstance(correlation, str) else walk.wf.correlation_id, parent="",
            snapshot={"workflow": definition, "taskDefs": walk.task_defs, "subWorkflows": walk.sub_workflows},
            depth=walk.wf.depth + 1))
        return {"workflowId": workflow_id}

    outcome, _ = _instant(walk, node, suffix, compute)
    walk.decision.start_workflows.extend(started)
    return outcome


def event(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    """EVENT: publish the resolved inputParameters to the topic `sink` names, in the same atomic
    write that completes the task (so it is published exactly once per completed attempt).
    Output `{"topic": ..., "published": true}`."""
    sink = node.get("sink")
    if isinstance(sink, str) and is_foreign_sink(sink):
        return simple(walk, node, suffix)   # another broker's sink: a worker of type EVENT publishes it
    published: list[tuple[str, str]] = []

    def compute(inputs: dict[str, Any]) -> dict[str, Any]:
        try:
            topic = topic_name(node.get("sink"), "'sink'")
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        try:
            published.append((topic_in(walk.namespace, topic), encode(inputs, "the event payload")))
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        return {"topic": topic, "published": True}

    outcome, _ = _instant(walk, node, suffix, compute)
    walk.decision.publish.extend(published)
    return outcome


# ---------------------------------------------------------------- containers

def fork_join(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    outcome, _ = _instant(walk, node, suffix, lambda inputs: {})
    if not outcome.done:
        return outcome
    return _run_branches(walk, _key(node, suffix), node["forkTasks"], suffix)


def fork_join_dynamic(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    key = _key(node, suffix)
    outcome, task = _instant(walk, node, suffix, lambda inputs: _dynamic_branches(walk, node, inputs, suffix))
    if not outcome.done:
        return outcome
    if task.runtime.status != st.TASK_COMPLETED:   # optional and failed, or skipped: no branches to run
        walk.fork_done[key] = True
        return DONE
    output = task.output or {}
    branches: list[WorkflowTask] = output["branches"]
    if "branchInputs" not in output:   # stored before specs' own inputs were resolved: the input was data
        data = {b["taskReferenceName"]: b["inputParameters"] for b in branches}
        branches = [{**b, "inputParameters": {}} for b in branches]
    else:
        data = output["branchInputs"]
    for branch in branches:   # dynamic inputs are data: never resolved again as templates
        branch_key = _key(branch, suffix)
        if branch_key not in walk.latest:
            walk.input_extras.setdefault(branch_key, data.get(branch["taskReferenceName"], {}))
    return _run_branches(walk, key, [[branch] for branch in branches], suffix)


def _dynamic_branches(walk: Walk, node: WorkflowTask, inputs: dict[str, Any], suffix: str) -> dict[str, Any]:
    """Branches from the input, as `{"forkedTasks": refs, "branches": tasks, "branchInputs": data}`:
    ours (`forkTaskName` + `forkTaskInputs` on the task: one `<ref>_<i>` per input), Conductor's
    (`forkTaskName` or `forkTaskWorkflow` + `forkTaskInputs` in the input: one `_<name>_<i>` task
    or sub-workflow per input), or a list of task specs (`dynamicForkTasksParam`) whose own
    inputParameters are resolved and then overlaid with `dynamicForkTasksInputParamName`'s
    entry for them (data, not resolved)."""
    ref = node["taskReferenceName"]
    if node.get("forkTaskName"):
        items = walk.resolve(node["forkTaskInputs"])
        if not isinstance(items, list):
            raise ValueError(f"'forkTaskInputs' of '{ref}' resolved to {type(items).__name__}, not a list")
        _check_fan_out(ref, len(items))
        specs: Any = [{"name": node["forkTaskName"], "taskReferenceName": f"{ref}_{i}"} for i in range(len(items))]
        per_ref = {spec["taskReferenceName"]: item for spec, item in zip(specs, items)}
    elif isinstance(inputs.get("forkTaskInputs"), list) and any(
            inputs.get(k) is not None for k in ("forkTaskName", "forkTaskWorkflow", "forkTaskType")):
        specs, per_ref = _conductor_simple_fork(node, inputs)
    else:
        specs = inputs.get(node.get("dynamicForkTasksParam") or "")
        per_ref = inputs.get(node.get("dynamicForkTasksInputParamName") or "") or {}
        if not isinstance(specs, list) or not isinstance(per_ref, dict):
            raise ValueError(f"'{ref}': '{node.get('dynamicForkTasksParam')}' must resolve to a list of tasks and "
                             f"'{node.get('dynamicForkTasksInputParamName')}' to an object of inputs by reference")
        _check_fan_out(ref, len(specs))
    static_refs = {n["taskReferenceName"] for n in iter_nodes(walk.definition["tasks"])}
    workflow_names = {key.rsplit(":", 1)[0] for key in walk.sub_workflows}
    branches: list[WorkflowTask] = []
    data: dict[str, Any] = {}
    taken: set[str] = set()   # a set, not a scan of `branches`: a wide fork stays linear
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("taskReferenceName"), str):
            raise ValueError(f"'{ref}': each dynamic task needs a 'name' and a 'taskReferenceName'")
        branch_ref, kind = spec["taskReferenceName"], spec.get("type") or "SIMPLE"
        if kind == "SIMPLE" and spec.get("name") not in walk.task_defs and not isinstance(
                spec.get("taskDefinition"), dict):
            raise ValueError(f"'{ref}': dynamic task '{branch_ref}' names no task definition ('{spec.get('name')}')")
        if branch_ref in static_refs or branch_ref in taken or branch_ref + suffix in walk.latest:
            raise ValueError(f"'{ref}': dynamic task reference '{branch_ref}' is already in use")
        taken.add(branch_ref)
        branch, problems = normalise_dynamic_task(spec, walk.task_defs, workflow_names, set(walk.scope))
        if problems:
            raise ValueError(f"'{ref}': dynamic task '{branch_ref}': {'; '.join(problems)[:500]}")
        item = per_ref.get(branch_ref, {})
        data[branch_ref] = item if isinstance(item, dict) else {"item": item}
        branches.append(branch)   # type: ignore[arg-type]  # normalised by the validator
    return {"forkedTasks": [b["taskReferenceName"] for b in branches], "branches": branches, "branchInputs": data}


def _conductor_simple_fork(node: WorkflowTask, inputs: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Conductor's dynamic fork by `forkTaskName`/`forkTaskType`/`forkTaskWorkflow` and a list
    `forkTaskInputs`: task `_<name>_<i>` gets the item (an object, or `{"input": item}`) plus
    `__index`; with `forkTaskWorkflow` each branch is that sub-workflow."""
    items: list[Any] = inputs["forkTaskInputs"]
    _check_fan_out(node["taskReferenceName"], len(items))
    workflow, kind = inputs.get("forkTaskWorkflow"), inputs.get("forkTaskType")
    name = inputs.get("forkTaskName") or (kind if kind not in (None, "SIMPLE") else None) or node["taskReferenceName"]
    version = inputs.get("forkTaskWorkflowVersion")
    specs, per_ref = [], {}
    for index, item in enumerate(items):
        branch_ref = f"_{name}_{index}"
        spec: dict[str, Any] = {"name": workflow or name, "taskReferenceName": branch_ref,
                                "type": "SUB_WORKFLOW" if workflow else kind or "SIMPLE",
                                "optional": bool(node.get("optional"))}
        if workflow:
            spec["subWorkflowParam"] = {"name": workflow, "version": int(version) if isinstance(version, (int, str))
                                        and str(version).strip().isdigit() else 0}
        specs.append(spec)
        per_ref[branch_ref] = {**(item if isinstance(item, dict) else {"input": item}), "__index": index}
    return specs, per_ref


def _check_fan_out(ref: str, branches: int) -> None:
    if branches > MAX_DYNAMIC_FORK:
        raise ValueError(f"'{ref}': dynamic fork of {branches} branches exceeds the limit of {MAX_DYNAMIC_FORK}; "
                         "fork over batches instead (e.g. a SUB_WORKFLOW or a DO_WHILE per batch)")


def _run_branches(walk: Walk, fork_key: str, branches: list[list[WorkflowTask]], suffix: str) -> Outcome:
    outcomes = [sequence(walk, branch, suffix) for branch in branches]
    for outcome in outcomes:
        if outcome.kind in ("FAILED", "TERMINATE"):
            return outcome
    walk.fork_done[fork_key] = all(o.done for o in outcomes)
    return DONE   # the branches run on; the JOIN that follows waits for them


def join(walk: Walk, node: WorkflowTask, suffix: str, *, fork_ref: str) -> Outcome:
    """Wait for `joinOn` (or every branch of the fork `fork_ref` just before it)."""
    key = _key(node, suffix)
    task = walk.latest.get(key) or walk.add(node, key, status=st.IN_PROGRESS)
    if task.runtime.status in st.DONE_TASK:
        return DONE
    if task.runtime.status != st.IN_PROGRESS:
        return _failed_system_task(walk, node, task)
    fork_key = fork_ref + suffix
    if node["joinOn"]:
        joined = [walk.latest.get(ref + suffix) for ref in node["joinOn"]]
        ready = all(t is not None and t.runtime.status in st.DONE_TASK for t in joined)
    else:
        fork = walk.latest.get(fork_key)
        refs = (fork.output or {}).get("forkedTasks") if fork is not None and fork.output else None
        joined = [walk.latest.get(r + suffix) for r in refs] if refs else []
        ready = walk.fork_done.get(fork_key, False)
    if not ready:
        return BLOCKED
    walk.complete(task, {t.spec.ref: t.output or {} for t in joined if t is not None})
    return DONE


def switch(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    """SWITCH (and DECISION): run the case the expression selects, or the default case."""
    outcome, task = _instant(walk, node, suffix, lambda inputs: _select_case(node, inputs))
    if not outcome.done:
        return outcome
    if task.runtime.status != st.TASK_COMPLETED:   # optional and failed, or skipped: no case runs
        return DONE
    case = (task.output or {})["selectedCase"]
    branch = node["decisionCases"].get(case, node["defaultCase"])
    return sequence(walk, branch, suffix)


def _select_case(node: WorkflowTask, inputs: dict[str, Any]) -> dict[str, Any]:
    if node["type"] == "DECISION":   # Conductor's older SWITCH
        if node.get("caseValueParam"):
            value = inputs.get(node["caseValueParam"])
            case = value if isinstance(value, str) else json.dumps(value)
        else:
            case = javascript.to_case(javascript.evaluate(node["caseExpression"], inputs))
        return {"caseOutput": [case], "selectedCase": case}
    evaluator = node["evaluatorType"]
    if evaluator == "value-param":
        value = inputs.get(node["expression"])
    elif evaluator in JAVASCRIPT:
        return _selected(javascript.to_case(javascript.evaluate(node["expression"], inputs)))
    else:
        value = evaluate(node["expression"], inputs)
    return _selected(value if isinstance(value, str) else json.dumps(value))


def _selected(case: str) -> dict[str, Any]:
    return {"evaluationResult": [case], "selectedCase": case}


def exclusive_join(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    """EXCLUSIVE_JOIN (after a SWITCH/DECISION): the output of whichever `joinOn` task ran (else
    of `defaultExclusiveJoinTask`'s), once it is done."""
    key = _key(node, suffix)
    task = walk.latest.get(key) or walk.add(node, key, status=st.IN_PROGRESS)
    if task.runtime.status in st.DONE_TASK:
        return DONE
    if task.runtime.status != st.IN_PROGRESS:
        return _failed_system_task(walk, node, task)
    for refs in (node.get("joinOn") or [], node.get("defaultExclusiveJoinTask") or []):
        ran = [t for t in (walk.latest.get(ref + suffix) for ref in refs) if t is not None]
        if ran:
            joined = ran[-1]
            if joined.runtime.status in st.ACTIVE_TASK:
                return BLOCKED
            if joined.runtime.status not in st.DONE_TASK:
                walk.change(task, status=st.FAILED, reason=f"'{joined.spec.key}' ended {joined.runtime.status}")
                return walk.unsuccessful(node, task)
            walk.complete(task, dict(joined.output or {}))
            return DONE
    walk.complete(task, {})
    return DONE


def do_while(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    """Run `loopOver` once per iteration (keys get `__<n>`), while the condition holds or items remain."""
    key = _key(node, suffix)
    loop = walk.latest.get(key)
    if loop is None:
        items = walk.resolve(node["items"]) if node.get("items") is not None else None
        problem = ""
        if node.get("items") is not None and not isinstance(items, list):
            problem = f"'items' resolved to {type(items).__name__}, not a list"
        elif items is not None and len(items) > node["maxIterations"]:
            problem = (f"'items' has {len(items)} elements, more than maxIterations ({node['maxIterations']}); "
                       f"raise maxIterations (at most {MAX_LOOP_ITERATIONS}) or loop over batches")
        if problem:
            loop = walk.add(node, key, status=st.FAILED_WITH_TERMINAL_ERROR, reason=problem)
            return walk.unsuccessful(node, loop)
        if items == []:
            loop = walk.add(node, key, status=st.TASK_COMPLETED, output={"iteration": 0})
            return DONE
        loop = walk.add(node, key, status=st.IN_PROGRESS, output=_iteration_output(1, items),
                        extra={"items": items} if items is not None else {})
    if loop.runtime.status in st.DONE_TASK:
        return DONE
    if loop.runtime.status != st.IN_PROGRESS:
        return _failed_system_task(walk, node, loop)
    conductor = _conductor_loop(node)
    while True:
        output = loop.output or {}
        iteration = int(output["iteration"])
        outcome = sequence(walk, node["loopOver"], f"{suffix}__{iteration}")
        if not outcome.done:
            return outcome
        if conductor:   # Conductor's loop output keeps each iteration's outputs: {"1": {ref: output}, ...}
            output = _keep_iterations(walk, node, {**output, str(iteration): _iteration_outputs(walk, node, suffix,
                                                                                               iteration)}, iteration)
            walk.set_output(loop, output)
        try:
            again = _loop_again(walk, node, loop, iteration)
        except _RUN_TIME_ERRORS as exc:
            walk.change(loop, status=st.FAILED_WITH_TERMINAL_ERROR, reason=f"loopCondition: {exc}")
            return walk.unsuccessful(node, loop)
        if not again or iteration >= node["maxIterations"]:
            walk.complete(loop, {**output, "stoppedByCap": again})
            return DONE
        kept = {k: v for k, v in output.items() if k.isdigit()}
        walk.set_output(loop, {**kept, **_iteration_output(iteration + 1, loop.spec.extra.get("items"))})


def _conductor_loop(node: WorkflowTask) -> bool:
    """A loop written for Conductor (a JavaScript or value-param condition, or `items` in its
    inputParameters) has Conductor's output: each iteration's task outputs under its number."""
    inputs = node["inputParameters"]
    return node.get("evaluatorType") in (*JAVASCRIPT, "value-param") or (
        node.get("items") is not None and "items" in inputs and node["items"] == inputs["items"])


def _iteration_outputs(walk: Walk, node: WorkflowTask, suffix: str, iteration: int) -> dict[str, Any]:
    tail = f"{suffix}__{iteration}"
    outputs: dict[str, Any] = {}
    for inner in iter_nodes(node["loopOver"]):
        task = walk.latest.get(inner["taskReferenceName"] + tail)
        if task is not None:
            outputs[inner["taskReferenceName"]] = task.output or {}
    return outputs


def _keep_iterations(walk: Walk, node: WorkflowTask, output: dict[str, Any], iteration: int) -> dict[str, Any]:
    """Conductor's `keepLastN` (an input of the loop): only the last N iterations' outputs stay."""
    keep = walk.resolve(node["inputParameters"].get("keepLastN"))
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        return output
    return {k: v for k, v in output.items() if not k.isdigit() or int(k) > iteration - keep}


def _iteration_output(iteration: int, items: list[Any] | None) -> dict[str, Any]:
    if items is None:
        return {"iteration": iteration}
    item = items[iteration - 1]
    return {"iteration": iteration, "index": iteration - 1, "item": item, "loopIndex": iteration - 1,
            "loopItem": item}


def _loop_again(walk: Walk, node: WorkflowTask, loop: m.TaskState, iteration: int) -> bool:
    items = loop.spec.extra.get("items")
    if items is not None:
        return iteration < len(items)
    condition = node.get("loopCondition")
    assert condition is not None, "validation requires 'loopCondition' or 'items'"
    evaluator = node.get("evaluatorType")
    if evaluator in JAVASCRIPT:
        return javascript.to_boolean(javascript.evaluate(condition, _conductor_scope(walk, node, loop)))
    if evaluator == "value-param":
        value = walk.resolve(node["inputParameters"]).get(condition)
        return value is True or javascript.to_boolean(value) or (isinstance(value, str) and value.lower() == "true")
    return bool(evaluate(condition, walk.scope))


def _conductor_scope(walk: Walk, node: WorkflowTask, loop: m.TaskState) -> dict[str, Any]:
    """What Conductor's loop condition sees as `$`: the loop's inputParameters (resolved now),
    the loop's own output under its reference (`$.loop['iteration']`) and the latest output of
    each task inside the loop under its reference (`$.task.field`)."""
    scope: dict[str, Any] = dict(walk.resolve(node["inputParameters"]))
    for inner in iter_nodes(node["loopOver"]):
        entry = walk.scope.get(inner["taskReferenceName"])
        if entry is not None:
            scope[inner["taskReferenceName"]] = entry["output"]
    scope[node["taskReferenceName"]] = loop.output or {}
    return scope


VISITORS: dict[str, Visitor] = {
    "SIMPLE": simple, "DYNAMIC": dynamic, "NOOP": noop, "SET_VARIABLE": set_variable, "INLINE": inline,
    "LAMBDA": lambda_, "JSON_JQ_TRANSFORM": json_jq_transform, "TERMINATE": terminate, "WAIT": wait,
    "HUMAN": human, "SUB_WORKFLOW": sub_workflow, "START_WORKFLOW": start_workflow, "FORK_JOIN": fork_join,
    "FORK_JOIN_DYNAMIC": fork_join_dynamic, "SWITCH": switch, "DECISION": switch, "DO_WHILE": do_while,
    "EXCLUSIVE_JOIN": exclusive_join, "EVENT": event,
}

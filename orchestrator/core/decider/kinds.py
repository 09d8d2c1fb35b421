"""One function per task kind: given the walk and a definition node, advance it.

Each returns an Outcome: DONE (the next node may run), BLOCKED (waiting for a worker,
a timer, a signal or a child workflow), FAILED or TERMINATE. Containers (FORK_JOIN,
FORK_JOIN_DYNAMIC, SWITCH, DO_WHILE) walk their nested task lists with `sequence`.

Nothing here raises out of `decide` on account of data: a value that only shows up at run
time (a WAIT `until`, dynamic fork inputs, loop items, an expression's result) and cannot be
used fails its own task, FAILED_WITH_TERMINAL_ERROR, with a reason naming the value.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from collections.abc import Callable

from .. import state as m
from .. import statuses as st
from ..limits import MAX_DURATION_SECONDS, MAX_DYNAMIC_FORK, MAX_LOOP_ITERATIONS, MAX_SUBWORKFLOW_DEPTH
from ..schema import WorkflowTask
from ..safe_expr import SafeExpressionError, evaluate
from .decision import NewWorkflow
from .walk import BLOCKED, DONE, Outcome, Walk, seconds_ms

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
    return VISITORS[node["type"]](walk, node, suffix)


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

def simple(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    key = _key(node, suffix)
    task = walk.latest.get(key)
    if task is None:
        walk.schedule_worker_task(node, key, node["name"], attempt=0, delay_ms=seconds_ms(node["startDelay"]))
        return BLOCKED
    return walk.follow_worker_task(node, task, node["name"])


# ---------------------------------------------------------------- tasks the decider completes at once

def _instant(walk: Walk, node: WorkflowTask, suffix: str,
             compute: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[Outcome, m.TaskState]:
    """Create and complete a system task in this decision (or report the one already there)."""
    key = _key(node, suffix)
    task = walk.latest.get(key)
    if task is None:
        inputs = walk.input_for(node, key)
        try:
            output = compute(inputs)
        except (SafeExpressionError, ValueError, TypeError, RecursionError) as exc:
            task = walk.add(node, key, status=st.FAILED_WITH_TERMINAL_ERROR, input=inputs, reason=str(exc))
            return walk.unsuccessful(node, task), task
        task = walk.add(node, key, status=st.TASK_COMPLETED, input=inputs, output=output)
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


def inline(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    return _instant(walk, node, suffix, lambda inputs: {"result": evaluate(node["expression"], inputs)})[0]


def terminate(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    outcome, task = _instant(walk, node, suffix, lambda inputs: {})
    if not outcome.done:
        return outcome
    reason = walk.resolve(node["terminationReason"]) or f"TERMINATE task '{task.spec.key}'"
    return Outcome("TERMINATE", str(reason), node["terminationStatus"], walk.resolve(node["workflowOutput"]))


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
    try:
        until = _wait_until(walk, node)
    except ValueError as exc:
        return walk.add(node, key, status=st.FAILED_WITH_TERMINAL_ERROR, attempt=attempt, reason=str(exc))
    return walk.add(node, key, status=st.IN_PROGRESS, attempt=attempt, extra={"until": until} if until else {})


_EPOCH_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)


def _wait_until(walk: Walk, node: WorkflowTask) -> int:
    """When the WAIT ends (epoch ms), 0 for a signal; ValueError naming a bad `until`."""
    duration = node.get("duration")
    if duration is not None:
        return walk.now + seconds_ms(duration)
    if node.get("until") is None:
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


def _start_child(walk: Walk, node: WorkflowTask, key: str, attempt: int) -> m.TaskState:
    param = node["subWorkflowParam"]
    definition = walk.sub_workflows.get(f"{param['name']}:{param['version']}")
    problem = ""
    if walk.wf.depth >= MAX_SUBWORKFLOW_DEPTH:
        problem = (f"sub-workflow '{param['name']}' not started: this workflow is already {walk.wf.depth} workflows "
                   f"deep, the limit is {MAX_SUBWORKFLOW_DEPTH} (limits.MAX_SUBWORKFLOW_DEPTH); a definition that "
                   "starts itself through its sub-workflows never ends: break the cycle")
    elif definition is None:
        problem = (f"sub-workflow '{param['name']}' version {param['version'] or 'latest'} is not in this run's "
                   "snapshot of definitions; register it and restart the workflow")
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
        workflow_id=child_id, name=definition["name"], version=definition["version"], input=task.spec.input,
        correlation_id=walk.wf.correlation_id, parent=f"{walk.wf.workflow_id}|{task.task_id}",
        snapshot={"workflow": definition, "taskDefs": walk.task_defs, "subWorkflows": walk.sub_workflows},
        depth=walk.wf.depth + 1))
    return task


# ---------------------------------------------------------------- containers

def fork_join(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    outcome, _ = _instant(walk, node, suffix, lambda inputs: {})
    if not outcome.done:
        return outcome
    return _run_branches(walk, _key(node, suffix), node["forkTasks"], suffix)


def fork_join_dynamic(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    key = _key(node, suffix)
    outcome, task = _instant(walk, node, suffix, lambda inputs: _dynamic_branches(walk, node, inputs))
    if not outcome.done:
        return outcome
    if task.runtime.status != st.TASK_COMPLETED:   # optional and failed, or skipped: no branches to run
        walk.fork_done[key] = True
        return DONE
    branches: list[WorkflowTask] = (task.output or {})["branches"]
    for branch in branches:   # dynamic inputs are data: never resolved again as templates
        walk.input_overrides.setdefault(_key(branch, suffix), branch["inputParameters"])
    return _run_branches(walk, key, [[{**branch, "inputParameters": {}}] for branch in branches], suffix)


def _dynamic_branches(walk: Walk, node: WorkflowTask, inputs: dict[str, Any]) -> dict[str, Any]:
    """Branches from the input: a list of task specs (Conductor's form) or one input per branch."""
    ref = node["taskReferenceName"]
    if node.get("forkTaskName"):
        items = walk.resolve(node["forkTaskInputs"])
        if not isinstance(items, list):
            raise ValueError(f"'forkTaskInputs' of '{ref}' resolved to {type(items).__name__}, not a list")
        _check_fan_out(ref, len(items))
        specs: Any = [{"name": node["forkTaskName"], "taskReferenceName": f"{ref}_{i}"}
                            for i in range(len(items))]
        per_ref = {spec["taskReferenceName"]: item for spec, item in zip(specs, items)}
    else:
        specs = inputs.get(node["dynamicForkTasksParam"])
        per_ref = inputs.get(node["dynamicForkTasksInputParamName"]) or {}
        if not isinstance(specs, list) or not isinstance(per_ref, dict):
            raise ValueError(f"'{ref}': '{node['dynamicForkTasksParam']}' must resolve to a list of tasks and "
                             f"'{node['dynamicForkTasksInputParamName']}' to an object of inputs by reference")
        _check_fan_out(ref, len(specs))
    branches: list[WorkflowTask] = []
    taken: set[str] = set()   # a set, not a scan of `branches`: a wide fork stays linear
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("taskReferenceName"), str):
            raise ValueError(f"'{ref}': each dynamic task needs a 'name' and a 'taskReferenceName'")
        branch_ref, name = spec["taskReferenceName"], spec.get("name")
        if name not in walk.task_defs:
            raise ValueError(f"'{ref}': dynamic task '{branch_ref}' names no task definition ('{name}')")
        if branch_ref in walk.scope or branch_ref in taken:
            raise ValueError(f"'{ref}': dynamic task reference '{branch_ref}' is already in use")
        taken.add(branch_ref)
        item = per_ref.get(branch_ref, {})
        branches.append(WorkflowTask(name=name, taskReferenceName=branch_ref, type="SIMPLE", description="",
                                     optional=False, startDelay=0,
                                     inputParameters=item if isinstance(item, dict) else {"item": item}))
    return {"forkedTasks": [b["taskReferenceName"] for b in branches], "branches": branches}


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
    outcome, task = _instant(walk, node, suffix, lambda inputs: _select_case(node, inputs))
    if not outcome.done:
        return outcome
    if task.runtime.status != st.TASK_COMPLETED:   # optional and failed, or skipped: no case runs
        return DONE
    case = (task.output or {})["selectedCase"]
    branch = node["decisionCases"].get(case, node["defaultCase"])
    return sequence(walk, branch, suffix)


def _select_case(node: WorkflowTask, inputs: dict[str, Any]) -> dict[str, Any]:
    if node["evaluatorType"] == "value-param":
        value = inputs.get(node["expression"])
    else:
        value = evaluate(node["expression"], inputs)
    case = value if isinstance(value, str) else json.dumps(value)
    return {"evaluationResult": [case], "selectedCase": case}


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
    while True:
        output = loop.output or {}
        iteration = int(output["iteration"])
        outcome = sequence(walk, node["loopOver"], f"{suffix}__{iteration}")
        if not outcome.done:
            return outcome
        try:
            again = _loop_again(walk, node, loop, iteration)
        except SafeExpressionError as exc:
            walk.change(loop, status=st.FAILED_WITH_TERMINAL_ERROR, reason=f"loopCondition: {exc}")
            return walk.unsuccessful(node, loop)
        if not again or iteration >= node["maxIterations"]:
            walk.complete(loop, {**output, "stoppedByCap": again})
            return DONE
        walk.set_output(loop, _iteration_output(iteration + 1, loop.spec.extra.get("items")))


def _iteration_output(iteration: int, items: list[Any] | None) -> dict[str, Any]:
    if items is None:
        return {"iteration": iteration}
    return {"iteration": iteration, "index": iteration - 1, "item": items[iteration - 1]}


def _loop_again(walk: Walk, node: WorkflowTask, loop: m.TaskState, iteration: int) -> bool:
    items = loop.spec.extra.get("items")
    if items is not None:
        return iteration < len(items)
    condition = node.get("loopCondition")
    assert condition is not None, "validation requires 'loopCondition' or 'items'"
    return bool(evaluate(condition, walk.scope))


VISITORS: dict[str, Visitor] = {
    "SIMPLE": simple, "NOOP": noop, "SET_VARIABLE": set_variable, "INLINE": inline, "TERMINATE": terminate,
    "WAIT": wait, "HUMAN": human, "SUB_WORKFLOW": sub_workflow, "FORK_JOIN": fork_join,
    "FORK_JOIN_DYNAMIC": fork_join_dynamic, "SWITCH": switch, "DO_WHILE": do_while,
}

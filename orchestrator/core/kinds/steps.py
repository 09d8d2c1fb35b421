"""What the kinds' `decide` parts share: finding a node's instance, completing a system task
in the decision that creates it, following a task run by workers or waiting for time or a
signal, running branches side by side.

Nothing here raises out of `decide` on account of data: a value that only shows up at run
time (a WAIT `until`, dynamic fork inputs, loop items, an expression's result) and cannot be
used fails its own task, FAILED_WITH_TERMINAL_ERROR, with a reason naming the value. So does a
script (JavaScript, jq) that fails, runs too long or uses too much memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from .. import javascript, jqtransform
from .. import state as m
from .. import statuses as st
from ..safe_expr import SafeExpressionError
from ..schema import WorkflowDef, WorkflowTask
from ..values import seconds_ms
from .base import BLOCKED, DONE, Outcome

if TYPE_CHECKING:
    from ..decider.walk import Walk

# Failures of data and scripts at run time: each fails its own task with the message.
RUN_TIME_ERRORS = (SafeExpressionError, javascript.JavaScriptError, jqtransform.JqError, ValueError, TypeError,
                   RecursionError)


def key(node: WorkflowTask, suffix: str) -> str:
    """The key of a node's instance: its reference and the suffix of the loop iterations around it."""
    return f"{node['taskReferenceName']}{suffix}"


def shown(value: Any) -> str:
    """A value resolved at run time, in a reason, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False)[:200]
    except (TypeError, ValueError, RecursionError):
        text = repr(value)[:200]
    return text if len(text) <= 60 else text[:57] + "..."


def failed_system_task(walk: Walk, node: WorkflowTask, task: m.TaskState) -> Outcome:
    """A system instance that ended badly: retried only by an operator's retry."""
    if task.spec.key in walk.retrying:
        walk.retrying.discard(task.spec.key)
        walk.change(task, status=st.IN_PROGRESS, reason="", ended_at_ms=0)
        return BLOCKED
    return walk.unsuccessful(node, task)


def waiting_instance(walk: Walk, node: WorkflowTask, suffix: str) -> tuple[m.TaskState, Outcome | None]:
    """The instance of a task that waits in progress for others (a join): found, or created in
    progress; with the outcome already settled (DONE, or failed when it ended otherwise), else None."""
    task_key = key(node, suffix)
    task = walk.latest.get(task_key) or walk.add(node, task_key, status=st.IN_PROGRESS)
    if task.runtime.status in st.DONE_TASK:
        return task, DONE
    if task.runtime.status != st.IN_PROGRESS:
        return task, failed_system_task(walk, node, task)
    return task, None


def instant(walk: Walk, node: WorkflowTask, suffix: str,
            compute: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[Outcome, m.TaskState]:
    """Create and complete a system task in this decision (or report the one already there)."""
    task_key = key(node, suffix)
    task = walk.latest.get(task_key)
    if task is None:
        task_id = walk.new_id()
        inputs = walk.input_for(node, task_key, task_id)
        try:
            output = compute(inputs)
        except RUN_TIME_ERRORS as exc:
            task = walk.add(node, task_key, status=st.FAILED_WITH_TERMINAL_ERROR, input=inputs, reason=str(exc),
                            task_id=task_id)
            return walk.unsuccessful(node, task), task
        task = walk.add(node, task_key, status=st.TASK_COMPLETED, input=inputs, output=output, task_id=task_id)
    if task.runtime.status in st.DONE_TASK:
        return DONE, task
    return failed_system_task(walk, node, task), task


def completes_at_once(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    """The `decide` of a system task with no work: completed, output {}, in the decision that creates it."""
    return instant(walk, node, suffix, lambda inputs: {})[0]


def worker_type(node: WorkflowTask) -> str:
    """The task type a worker serves to run this node: the task definition's name for SIMPLE,
    the type itself for HTTP and the other I/O types, and for types that are not Conductor's."""
    return node["name"] if node["type"] == "SIMPLE" else node.get("taskType") or node["type"]


def run_on_worker(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None = None) -> Outcome:
    """Queue the node for workers of its task type, then follow the attempt: wait, time out, retry."""
    task_key = key(node, suffix)
    task = walk.latest.get(task_key)
    name = worker_type(node)
    if task is None:
        walk.schedule_worker_task(node, task_key, name, attempt=0, delay_ms=seconds_ms(node["startDelay"]))
        return BLOCKED
    return walk.follow_worker_task(node, task, name)


def follow_waiting(walk: Walk, node: WorkflowTask, task: m.TaskState) -> Outcome:
    """A task that waits (WAIT, HUMAN): done when its time comes (`extra.until`) or when it is
    completed from outside (a signal, an event, a person)."""
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
    return failed_system_task(walk, node, task)


def child_definition(walk: Walk, param: dict[str, Any]) -> tuple[WorkflowDef | None, str]:
    """The definition a SUB_WORKFLOW (or START_WORKFLOW) starts: defined inline, or named (by
    text or by a `${...}` resolved now) in this run's snapshot. (definition, problem)."""
    inline = param.get("workflowDefinition")
    if isinstance(inline, dict):
        return cast(WorkflowDef, inline), ""   # normalised at registration
    name, version = walk.resolve(param["name"]), walk.resolve(param.get("version", 0))
    if isinstance(version, str) and version.strip().isdigit():
        version = int(version)
    version = 0 if version is None else version
    if not isinstance(name, str) or not name:
        return None, f"the sub-workflow's name resolved to {shown(name)}, not a workflow name"
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        return None, f"the sub-workflow's version resolved to {shown(version)}, not 0 (latest) or a version number"
    definition = walk.find_workflow(name, version)
    if definition is None:
        return None, (f"sub-workflow '{name}' version {version or 'latest'} is not in this run's snapshot of "
                      "definitions; register it and restart the workflow")
    return definition, ""


def run_branches(walk: Walk, fork_key: str, branches: list[list[WorkflowTask]], suffix: str) -> Outcome:
    """Advance every branch of a fork; the JOIN that follows waits for them."""
    outcomes = [walk.run(branch, suffix) for branch in branches]
    for outcome in outcomes:
        if outcome.kind in ("FAILED", "TERMINATE"):
            return outcome
    walk.fork_done[fork_key] = all(o.done for o in outcomes)
    return DONE   # the branches run on; the JOIN that follows waits for them

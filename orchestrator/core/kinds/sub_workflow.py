"""SUB_WORKFLOW: start a child workflow in the same write; its end completes or fails this task
(in Lua). The child is named (`subWorkflowParam.name` and `version`, text or `${...}`) in this
run's snapshot of definitions, or defined inline (`subWorkflowParam.workflowDefinition`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import state as m
from .. import statuses as st
from ..limits import MAX_SUBWORKFLOW_DEPTH
from ..schema import WorkflowTask
from ..values import MAX_VERSION, digits, is_default, is_template
from .base import BLOCKED, DONE, Box, Checker, Kind, Outcome, Shape
from .refs import literal, version_of
from .steps import child_definition, key

if TYPE_CHECKING:
    from ..decider.walk import Walk


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
             _previous: Any) -> None:
    param = task.get("subWorkflowParam")
    if not isinstance(param, dict) or not isinstance(param.get("name"), str):
        checker.problems.append(f"{where}: 'subWorkflowParam' must be an object with 'name' (and 'version')")
        return
    name, version = param["name"], param.get("version", 0)
    version = 0 if version is None else version
    if digits(version):
        version = int(version)
    dynamic = is_template(name) or is_template(version)
    inline = param.get("workflowDefinition")
    if dynamic:
        checker.template({"name": name, "version": version}, f"{where}: 'subWorkflowParam'", known)
    if not dynamic and (not isinstance(version, int) or isinstance(version, bool)
                        or not 0 <= version <= MAX_VERSION):
        checker.problems.append(f"{where}: 'subWorkflowParam.version' must be 0 (latest) or a version number")
    elif inline is not None:
        out["subWorkflowParam"] = {"name": name, "version": version,
                                   "workflowDefinition": _inline_definition(checker, inline, where)}
    elif not dynamic and checker.workflow_defs.get(name) is None:
        checker.problems.append(f"{where}: no workflow definition named '{name}' is registered")
    out.setdefault("subWorkflowParam", {"name": name, "version": version})
    extras = sorted(k for k, v in param.items()
                    if k not in ("name", "version", "workflowDefinition") and not is_default(v))
    if extras:
        checker.warn(f"{where}: 'subWorkflowParam' field(s) {', '.join(extras)} are ignored (task-to-domain "
                     "mapping, priorities and idempotency settings of children are not supported)")


def _inline_definition(checker: Checker, inline: Any, where: str) -> Any:
    """A sub-workflow defined inside the task (Conductor's `subWorkflowParam.workflowDefinition`):
    checked as a definition of its own and stored normalised in the task."""
    if not isinstance(inline, dict):
        checker.problems.append(f"{where}: 'subWorkflowParam.workflowDefinition' must be a workflow definition")
        return inline
    definition, problems, warnings = checker.check_definition(inline)
    checker.problems.extend(f"{where}: 'subWorkflowParam.workflowDefinition': {p}" for p in problems)
    for warning in warnings:
        checker.warn(f"{where}: 'subWorkflowParam.workflowDefinition': {warning}")
    return definition


def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    task_key = key(node, suffix)
    task = walk.latest.get(task_key)
    if task is not None and task.runtime.status in st.UNSUCCESSFUL_TASK and task_key in walk.retrying:
        walk.retrying.discard(task_key)
        task = _start_child(walk, node, task_key, task.spec.attempt + 1)
    elif task is None:
        task = _start_child(walk, node, task_key, 0)
    status = task.runtime.status
    if status in st.DONE_TASK:
        return DONE
    if status == st.IN_PROGRESS:
        return BLOCKED
    return walk.unsuccessful(node, task)


def _start_child(walk: Walk, node: WorkflowTask, task_key: str, attempt: int) -> m.TaskState:
    definition, problem = child_definition(walk, dict(node["subWorkflowParam"]))
    if walk.wf.depth >= MAX_SUBWORKFLOW_DEPTH:
        name = definition["name"] if definition is not None else node["subWorkflowParam"]["name"]
        problem = (f"sub-workflow '{name}' not started: this workflow is already {walk.wf.depth} workflows "
                   f"deep, the limit is {MAX_SUBWORKFLOW_DEPTH} (limits.MAX_SUBWORKFLOW_DEPTH); a definition that "
                   "starts itself through its sub-workflows never ends: break the cycle")
    if problem:
        return walk.add(node, task_key, status=st.FAILED_WITH_TERMINAL_ERROR, attempt=attempt, reason=problem)
    assert definition is not None
    # The child is created in the same atomic write as this task, so naming it after the task
    # makes it unique per execution (a restart or rerun gets a new child, never the old one)
    # and a decision that is refused (a conflict) leaves no child behind.
    task_id = walk.new_id()
    child_id = f"{walk.wf.workflow_id}.{task_key}.{attempt}.{task_id[:12]}"
    task = walk.add(node, task_key, status=st.IN_PROGRESS, attempt=attempt, extra={"child": child_id},
                    output={"subWorkflowId": child_id}, task_id=task_id)
    walk.decision.start_workflows.append(walk.new_workflow(
        child_id, definition, task.spec.input, correlation_id=walk.wf.correlation_id,
        parent=f"{walk.wf.workflow_id}|{task.task_id}"))
    return task


def graph(task: Mapping[str, Any]) -> Shape:
    """A box titled with the child's name."""
    return Box(f"sub: {task.get('subWorkflowParam', {}).get('name', '?')}")


# ---------------------------------------------------------------- what a run needs

def _param(task: Mapping[str, Any]) -> dict[str, Any] | None:
    param = task.get("subWorkflowParam")
    return param if isinstance(param, dict) else None


def inline_workflows(task: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The child, when it is defined inside the task."""
    param = _param(task)
    return [param["workflowDefinition"]] if param and isinstance(param.get("workflowDefinition"), dict) else []


def workflows_named(task: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The child, when a registered one is named by text (its version too)."""
    param = _param(task)
    if param is None or inline_workflows(task) or not literal(param.get("name")) or is_template(param.get("version")):
        return []
    return [(param["name"], version_of(param.get("version")))]


def named_at_run_time(task: Mapping[str, Any]) -> bool:
    """A registered child whose name or version is a `${...}` expression."""
    param = _param(task)
    return param is not None and not inline_workflows(task) and (is_template(param.get("name"))
                                                                  or is_template(param.get("version")))


KIND = Kind(names=("SUB_WORKFLOW",), role="system", fields=frozenset({"subWorkflowParam"}), validate=validate,
            decide=decide, graph=graph, workflows_named=workflows_named, needs_every_workflow_def=named_at_run_time,
            inline_workflows=inline_workflows)

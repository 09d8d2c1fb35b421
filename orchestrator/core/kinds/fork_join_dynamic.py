"""FORK_JOIN_DYNAMIC: branches known only at run time, one task (or sub-workflow) each. Ours:
`forkTaskName` + `forkTaskInputs` on the task, one `<ref>_<i>` per input. Conductor's:
`forkTaskName` or `forkTaskWorkflow` + `forkTaskInputs` in the input, one `_<name>_<i>` per
input; or a list of task specs (`dynamicForkTasksParam`) whose own inputParameters are resolved
and then overlaid with `dynamicForkTasksInputParamName`'s entry for them (data, not resolved).
Each spec is checked as a task of a Conductor definition when the fork runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import statuses as st
from ..limits import MAX_DYNAMIC_FORK, MAX_FORK_BRANCHES
from ..schema import WorkflowTask
from ..values import is_template, names_key, show
from .base import DONE, Box, Checker, Kind, Outcome, Shape
from .refs import literal, version_of
from .steps import instant, key, run_branches

if TYPE_CHECKING:
    from ..decider.walk import Walk


# ---------------------------------------------------------------- registration

def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
    inputs = out["inputParameters"]
    by_param = task.get("dynamicForkTasksParam")
    by_name = task.get("forkTaskName")
    simple = "forkTaskInputs" in inputs and any(k in inputs for k in ("forkTaskName", "forkTaskWorkflow",
                                                                       "forkTaskType"))
    if task.get("dynamicForkJoinTasksParam"):
        checker.problems.append(f"{where}: 'dynamicForkJoinTasksParam' (Conductor's deprecated form) is not "
                                "supported; use 'dynamicForkTasksParam' + 'dynamicForkTasksInputParamName'")
    if simple and not by_name:   # Conductor's: one task (or sub-workflow) per item of forkTaskInputs
        _check_conductor_inputs(checker, inputs, where)
        if by_param:
            out["dynamicForkTasksParam"] = by_param
            out["dynamicForkTasksInputParamName"] = task.get("dynamicForkTasksInputParamName")
        return
    if bool(by_param) == bool(by_name):
        checker.problems.append(f"{where}: give either 'dynamicForkTasksParam' (+ 'dynamicForkTasksInputParamName')"
                                " or 'forkTaskName' + 'forkTaskInputs'")
    if by_param:
        for field in ("dynamicForkTasksParam", "dynamicForkTasksInputParamName"):
            if not names_key(task.get(field), inputs):
                checker.problems.append(f"{where}: '{field}' must name a key of 'inputParameters'")
        out["dynamicForkTasksParam"] = by_param
        out["dynamicForkTasksInputParamName"] = task.get("dynamicForkTasksInputParamName")
    if by_name:
        _check_by_name(checker, task, by_name, where)
        out["forkTaskName"] = by_name
        out["forkTaskInputs"] = task.get("forkTaskInputs")


def _check_by_name(checker: Checker, task: dict[str, Any], by_name: Any, where: str) -> None:
    """Ours: `forkTaskName` (a task definition) and `forkTaskInputs` (one input per branch)."""
    if isinstance(by_name, str):
        checker.task_def_exists(by_name, f"{where}: 'forkTaskName'")
    if "forkTaskInputs" not in task:
        checker.problems.append(f"{where}: 'forkTaskInputs' (a list, one input per branch) is required")
    checker.template(task.get("forkTaskInputs"), f"{where}: 'forkTaskInputs'", set(checker.refs))
    if isinstance(task.get("forkTaskInputs"), list) and len(task["forkTaskInputs"]) > MAX_FORK_BRANCHES:
        checker.problems.append(f"{where}: 'forkTaskInputs' has {len(task['forkTaskInputs'])} items, more than "
                                f"the limit of {MAX_FORK_BRANCHES} branches")


def _check_conductor_inputs(checker: Checker, inputs: dict[str, Any], where: str) -> None:
    name, workflow, kind = inputs.get("forkTaskName"), inputs.get("forkTaskWorkflow"), inputs.get("forkTaskType")
    items = inputs.get("forkTaskInputs")
    if isinstance(items, list) and len(items) > MAX_FORK_BRANCHES:
        checker.problems.append(f"{where}: 'inputParameters.forkTaskInputs' has {len(items)} items, more than the "
                                f"limit of {MAX_FORK_BRANCHES} branches")
    if workflow is not None:
        if isinstance(workflow, str) and not is_template(workflow) and checker.workflow_defs.get(workflow) is None:
            checker.problems.append(f"{where}: no workflow definition named '{workflow}' is registered "
                                    "('inputParameters.forkTaskWorkflow')")
    elif kind in (None, "SIMPLE") and isinstance(name, str) and not is_template(name):
        checker.task_def_exists(name, f"{where}: 'inputParameters.forkTaskName'")
    elif kind is not None and not is_template(kind) and not checker.is_task_type(kind):
        checker.problems.append(f"{where}: 'inputParameters.forkTaskType' {show(kind)} is not supported")


# ---------------------------------------------------------------- run time

def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    fork_key = key(node, suffix)
    outcome, task = instant(walk, node, suffix, lambda inputs: _branches(walk, node, inputs, suffix))
    if not outcome.done:
        return outcome
    if task.runtime.status != st.TASK_COMPLETED:   # optional and failed, or skipped: no branches to run
        walk.fork_done[fork_key] = True
        return DONE
    output = task.output or {}
    branches: list[WorkflowTask] = output["branches"]
    if "branchInputs" not in output:   # stored before specs' own inputs were resolved: the input was data
        data = {b["taskReferenceName"]: b["inputParameters"] for b in branches}
        branches = [{**b, "inputParameters": {}} for b in branches]
    else:
        data = output["branchInputs"]
    for branch in branches:   # dynamic inputs are data: never resolved again as templates
        branch_key = key(branch, suffix)
        if branch_key not in walk.latest:
            walk.input_extras.setdefault(branch_key, data.get(branch["taskReferenceName"], {}))
    return run_branches(walk, fork_key, [[branch] for branch in branches], suffix)


def _branches(walk: Walk, node: WorkflowTask, inputs: dict[str, Any], suffix: str) -> dict[str, Any]:
    """Branches from the input, as `{"forkedTasks": refs, "branches": tasks, "branchInputs": data}`."""
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
    return _checked_branches(walk, ref, specs, per_ref, suffix)


def _checked_branches(walk: Walk, ref: str, specs: list[Any], per_ref: dict[str, Any],
                      suffix: str) -> dict[str, Any]:
    """Each spec checked and normalised as a task of a Conductor definition, under a reference
    no other task uses."""
    static_refs = {n["taskReferenceName"] for n in walk.nodes(walk.definition["tasks"])}
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
        branch, problems = walk.dynamic_task(spec)
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


def graph(task: Mapping[str, Any]) -> Shape:
    """One box: its branches are only known when it runs."""
    return Box(f"dynamic fork: {task.get('forkTaskName') or 'tasks'}")


# ---------------------------------------------------------------- what a run needs

def _inputs(task: Mapping[str, Any]) -> Mapping[str, Any]:
    inputs = task.get("inputParameters")
    return inputs if isinstance(inputs, dict) else {}


def task_defs_named(task: Mapping[str, Any]) -> list[str]:
    """The task definition of every branch, when a name written in it says which."""
    names = [task["forkTaskName"]] if isinstance(task.get("forkTaskName"), str) else []
    inputs = _inputs(task)
    if literal(inputs.get("forkTaskName")) and "forkTaskWorkflow" not in inputs \
            and inputs.get("forkTaskType") in (None, "SIMPLE"):
        names.append(inputs["forkTaskName"])
    return names


def task_specs(task: Mapping[str, Any]) -> bool:
    """Its branches are task specs given at run time (not one named task definition): their
    task definitions are known only then."""
    return not task.get("forkTaskName")


def workflows_named(task: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The sub-workflow of every branch, when a name written in it says which."""
    inputs = _inputs(task)
    workflow = inputs.get("forkTaskWorkflow")
    return [(workflow, version_of(inputs.get("forkTaskWorkflowVersion")))] if literal(workflow) else []


def may_start_any_workflow(task: Mapping[str, Any]) -> bool:
    """Its branches are task specs (which may be SUB_WORKFLOW tasks) or sub-workflows named at run time."""
    inputs = _inputs(task)
    named_task = "forkTaskName" in inputs and "forkTaskWorkflow" not in inputs
    return task_specs(task) and not named_task and not literal(inputs.get("forkTaskWorkflow"))


KIND = Kind(names=("FORK_JOIN_DYNAMIC",), role="container",
            fields=frozenset({"dynamicForkTasksParam", "dynamicForkTasksInputParamName", "forkTaskName",
                              "forkTaskInputs"}),
            validate=validate, decide=decide, graph=graph,
            runs_user_code=True,   # its branches, known at run time, may be script tasks
            task_defs_named=task_defs_named, needs_every_task_def=task_specs, workflows_named=workflows_named,
            needs_every_workflow_def=may_start_any_workflow)

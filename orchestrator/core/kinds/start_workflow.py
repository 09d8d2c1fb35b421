"""START_WORKFLOW: start another workflow and go on at once (fire and forget: the new one has
no parent); output `{"workflowId": ...}`. What to start is `inputParameters.startWorkflow`
(`name`, `version`, `input`, `correlationId`), as Conductor writes it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..limits import MAX_SUBWORKFLOW_DEPTH
from ..schema import WorkflowTask
from ..values import MAX_VERSION, is_template
from .base import Checker, Kind, Outcome
from .refs import literal, version_of
from .steps import child_definition, instant, shown

if TYPE_CHECKING:
    from ..decider.decision import NewWorkflow
    from ..decider.walk import Walk


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
    spec = out["inputParameters"].get("startWorkflow")
    if is_template(spec):
        return
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        checker.problems.append(f"{where}: 'inputParameters.startWorkflow' must be an object with 'name' (and "
                                "'version', 'input', 'correlationId')")
        return
    version = spec.get("version")
    if version is not None and not is_template(version) and (
            not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= MAX_VERSION):
        checker.problems.append(f"{where}: 'inputParameters.startWorkflow.version' must be 0 (latest) or a "
                                "version number")
    if not is_template(spec["name"]) and checker.workflow_defs.get(spec["name"]) is None:
        checker.problems.append(f"{where}: no workflow definition named '{spec['name']}' is registered")


def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    started: list[NewWorkflow] = []

    def compute(inputs: dict[str, Any]) -> dict[str, Any]:
        spec = inputs.get("startWorkflow")
        if not isinstance(spec, dict):
            raise ValueError(f"'startWorkflow' resolved to {shown(spec)}, not an object with 'name'")
        definition, problem = child_definition(walk, {"name": spec.get("name"), "version": spec.get("version")})
        if problem:
            raise ValueError(problem.replace("sub-workflow", "workflow"))
        assert definition is not None
        if walk.wf.depth >= MAX_SUBWORKFLOW_DEPTH:
            raise ValueError(f"workflow '{definition['name']}' not started: this workflow is already "
                             f"{walk.wf.depth} workflows deep, the limit is {MAX_SUBWORKFLOW_DEPTH}")
        workflow_input = spec.get("input") or {}
        if not isinstance(workflow_input, dict):
            raise ValueError(f"'startWorkflow.input' resolved to {shown(workflow_input)}, not an object")
        correlation = spec.get("correlationId")
        workflow_id = walk.new_workflow_id()
        started.append(walk.new_workflow(
            workflow_id, definition, workflow_input,
            correlation_id=correlation if isinstance(correlation, str) else walk.wf.correlation_id, parent=""))
        return {"workflowId": workflow_id}

    outcome, _ = instant(walk, node, suffix, compute)
    walk.decision.start_workflows.extend(started)
    return outcome


def _named(task: Mapping[str, Any]) -> dict[str, Any] | None:
    """`startWorkflow`, when it names the workflow by text."""
    inputs = task.get("inputParameters")
    spec = inputs.get("startWorkflow") if isinstance(inputs, dict) else None
    return spec if isinstance(spec, dict) and literal(spec.get("name")) else None


def workflows_named(task: Mapping[str, Any]) -> list[tuple[str, int]]:
    spec = _named(task)
    return [(spec["name"], version_of(spec.get("version")))] if spec else []


def named_at_run_time(task: Mapping[str, Any]) -> bool:
    return _named(task) is None


KIND = Kind(names=("START_WORKFLOW",), role="system", fields=frozenset(), validate=validate, decide=decide,
            workflows_named=workflows_named, needs_every_workflow_def=named_at_run_time)

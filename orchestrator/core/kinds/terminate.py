"""TERMINATE: end the workflow with a status, a reason and an output. Ours: the three on the
task; Conductor's: all in inputParameters, resolved when it runs (the task's output, and the
workflow's, is `workflowOutput` when it is an object, else `{"output": workflowOutput}`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import statuses as st
from ..schema import WorkflowTask
from ..values import is_template, show
from .base import DONE, Checker, Kind, Outcome
from .steps import instant, shown

if TYPE_CHECKING:
    from ..decider.walk import Walk

TERMINATION_STATUSES = ("COMPLETED", "FAILED", "TERMINATED")


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
             _previous: Any) -> None:
    inputs = out["inputParameters"]
    if any(f in task for f in ("terminationStatus", "terminationReason", "workflowOutput")) \
            or "terminationStatus" not in inputs:   # ours: on the task
        status = task.get("terminationStatus", "COMPLETED")
        if status not in TERMINATION_STATUSES:
            checker.problems.append(f"{where}: 'terminationStatus' must be one of "
                                    f"{', '.join(TERMINATION_STATUSES)}")
        out["terminationStatus"] = status
        out["terminationReason"] = task.get("terminationReason", "")
        out["workflowOutput"] = task.get("workflowOutput", {})
        if not isinstance(out["workflowOutput"], dict):
            checker.problems.append(f"{where}: 'workflowOutput' must be an object (it becomes the workflow's "
                                    "output)")
        checker.template(out["workflowOutput"], f"{where}: 'workflowOutput'", known)
        checker.template(out["terminationReason"], f"{where}: 'terminationReason'", known)
        return
    status = inputs["terminationStatus"]   # Conductor's: in inputParameters, resolved at run time
    if not is_template(status) and status not in TERMINATION_STATUSES:
        checker.problems.append(f"{where}: 'inputParameters.terminationStatus' must be one of "
                                f"{', '.join(TERMINATION_STATUSES)}, got {show(status)}")
    if out["optional"]:
        checker.problems.append(f"{where}: a TERMINATE task cannot be optional")


def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    if "terminationStatus" not in node:   # Conductor's: everything in inputParameters
        return _terminate_by_inputs(walk, node, suffix)
    outcome, task = instant(walk, node, suffix, lambda inputs: {})
    if not outcome.done:
        return outcome
    reason = walk.resolve(node["terminationReason"]) or f"TERMINATE task '{task.spec.key}'"
    return Outcome("TERMINATE", str(reason), node["terminationStatus"], walk.resolve(node["workflowOutput"]))


def _terminate_by_inputs(walk: Walk, node: WorkflowTask, suffix: str) -> Outcome:
    def compute(inputs: dict[str, Any]) -> dict[str, Any]:
        status = inputs.get("terminationStatus")
        if status not in TERMINATION_STATUSES:
            raise ValueError(f"'terminationStatus' resolved to {shown(status)}, not one of "
                             f"{', '.join(TERMINATION_STATUSES)}")
        value = inputs.get("workflowOutput")
        if value is None:
            return {}
        return dict(value) if isinstance(value, dict) else {"output": value}
    outcome, task = instant(walk, node, suffix, compute)
    if not outcome.done:
        return outcome
    if task.runtime.status != st.TASK_COMPLETED:   # optional and failed, or skipped: nothing to end
        return DONE
    inputs = task.spec.input
    reason = inputs.get("terminationReason") or f"TERMINATE task '{task.spec.key}'"
    return Outcome("TERMINATE", str(reason), str(inputs["terminationStatus"]), dict(task.output or {}))


KIND = Kind(names=("TERMINATE",), role="system",
            fields=frozenset({"terminationStatus", "terminationReason", "workflowOutput"}), validate=validate,
            decide=decide)

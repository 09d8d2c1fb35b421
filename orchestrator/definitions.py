"""Task and workflow definitions: parsing (JSON or YAML), validation and defaults.

Validation collects every problem, each naming the task reference and the field,
so that one registration attempt tells the author everything to fix.
Normalised definitions carry all defaults explicitly: what is stored is what runs.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import yaml

from .errors import InvalidArgument
from .expressions import ExpressionError, references_in

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
RETRY_LOGICS = ("FIXED", "LINEAR_BACKOFF", "EXPONENTIAL_BACKOFF")
SUPPORTED_TASK_KINDS = ("SIMPLE",)

TASK_DEF_DEFAULTS: dict[str, Any] = {
    "description": "",
    "retryCount": 3,
    "retryLogic": "FIXED",
    "retryDelaySeconds": 1.0,
    "backoffScaleFactor": 1.0,
    "maxRetryDelaySeconds": 300.0,
    "responseTimeoutSeconds": 60.0,
    "timeoutSeconds": 0.0,
}

WORKFLOW_DEF_DEFAULTS: dict[str, Any] = {
    "description": "",
    "version": 1,
    "inputParameters": [],
    "outputParameters": {},
}


def parse_document(text: str) -> dict[str, Any]:
    """Read a JSON or YAML document that must hold one object."""
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidArgument(f"document is neither valid JSON nor valid YAML: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidArgument("a definition document must be a JSON/YAML object, "
                              f"got {type(value).__name__}")
    return value


def normalise_task_def(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a task definition and fill in its defaults."""
    problems: list[str] = []
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append("task definition: 'name' is required: letters, digits, '_', '.', '-' (max 128)")
        name = "?"
    out = {**TASK_DEF_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    where = f"task definition '{name}'"
    _check_int(out, "retryCount", where, problems, low=0, high=100)
    if out["retryLogic"] not in RETRY_LOGICS:
        problems.append(f"{where}: 'retryLogic' must be one of {', '.join(RETRY_LOGICS)}, "
                        f"got {out['retryLogic']!r}")
    for field in ("retryDelaySeconds", "backoffScaleFactor", "maxRetryDelaySeconds", "timeoutSeconds"):
        _check_number(out, field, where, problems, low=0.0)
    _check_number(out, "responseTimeoutSeconds", where, problems, low=0.1)
    if not isinstance(out["description"], str):
        problems.append(f"{where}: 'description' must be a string")
    unknown = sorted(set(out) - set(TASK_DEF_DEFAULTS) - {"name"})
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
    _raise_if(problems, "invalid task definition")
    return out


def validate_workflow_def(raw: Mapping[str, Any],
                          task_defs: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Check a workflow definition against the registered task definitions.

    Returns the normalised definition and the list of problems (empty when valid).
    """
    problems: list[str] = []
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append("workflow definition: 'name' is required: letters, digits, '_', '.', '-' (max 128)")
        name = "?"
    out: dict[str, Any] = {**WORKFLOW_DEF_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    where = f"workflow '{name}'"
    _check_int(out, "version", where, problems, low=1, high=2**31 - 1)
    if not isinstance(out["outputParameters"], dict):
        problems.append(f"{where}: 'outputParameters' must be an object")
    tasks = out.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        problems.append(f"{where}: 'tasks' must be a non-empty list")
        tasks = []
    known_refs: set[str] = set()
    normalised_tasks = []
    for index, task in enumerate(tasks):
        normalised_tasks.append(_validate_workflow_task(task, index, known_refs, task_defs, problems))
    out["tasks"] = normalised_tasks
    _check_template(out["outputParameters"], f"{where}: 'outputParameters'", known_refs, problems)
    unknown = sorted(set(out) - set(WORKFLOW_DEF_DEFAULTS) - {"name", "tasks"})
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
    return out, problems


def normalise_workflow_def(raw: Mapping[str, Any],
                           task_defs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    out, problems = validate_workflow_def(raw, task_defs)
    _raise_if(problems, "invalid workflow definition")
    return out


def referenced_task_names(raw: Mapping[str, Any]) -> set[str]:
    """Names of the task definitions a (possibly invalid) workflow definition uses."""
    tasks = raw.get("tasks")
    if not isinstance(tasks, list):
        return set()
    return {t["name"] for t in tasks if isinstance(t, dict) and isinstance(t.get("name"), str)}


def _validate_workflow_task(task: Any, index: int, known_refs: set[str],
                            task_defs: Mapping[str, Mapping[str, Any]],
                            problems: list[str]) -> dict[str, Any]:
    if not isinstance(task, dict):
        problems.append(f"tasks[{index}]: must be an object")
        return {}
    ref = task.get("taskReferenceName")
    where = f"task '{ref}' (tasks[{index}])" if isinstance(ref, str) else f"tasks[{index}]"
    if not isinstance(ref, str) or not NAME.match(ref):
        problems.append(f"{where}: 'taskReferenceName' is required: letters, digits, '_', '.', '-'")
    elif ref in known_refs:
        problems.append(f"{where}: 'taskReferenceName' '{ref}' is used twice")
    elif ref == "workflow":
        problems.append(f"{where}: 'workflow' is reserved and cannot be a taskReferenceName")
    kind = task.get("type", "SIMPLE")
    if kind not in SUPPORTED_TASK_KINDS:
        problems.append(f"{where}: 'type' {kind!r} is not supported; use one of {', '.join(SUPPORTED_TASK_KINDS)}")
    name = task.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: 'name' (the task definition to run) is required")
    elif kind == "SIMPLE" and name not in task_defs:
        problems.append(f"{where}: no task definition named '{name}' is registered; register it first")
    inputs = task.get("inputParameters", {})
    if not isinstance(inputs, dict):
        problems.append(f"{where}: 'inputParameters' must be an object")
        inputs = {}
    _check_template(inputs, f"{where}: 'inputParameters'", known_refs, problems)
    unknown = sorted(set(task) - {"name", "taskReferenceName", "type", "inputParameters", "description"})
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
    if isinstance(ref, str):
        known_refs.add(ref)
    return {"name": name, "taskReferenceName": ref, "type": kind,
            "inputParameters": inputs, "description": task.get("description", "")}


def _check_template(template: Any, where: str, known_refs: set[str], problems: list[str]) -> None:
    """Every expression must parse and may only name tasks that run before this point."""
    try:
        for reference in references_in(template):
            if reference.root != "workflow" and reference.root not in known_refs:
                problems.append(f"{where}: '${{{reference.root}...}}' names no earlier task reference")
    except ExpressionError as exc:
        problems.append(f"{where}: {exc}")


def _check_int(out: dict[str, Any], field: str, where: str, problems: list[str],
               *, low: int, high: int) -> None:
    value = out.get(field)
    if isinstance(value, float) and value.is_integer():
        value = out[field] = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        problems.append(f"{where}: '{field}' must be an integer from {low} to {high}, got {value!r}")


def _check_number(out: dict[str, Any], field: str, where: str, problems: list[str], *, low: float) -> None:
    value = out.get(field)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low:
        problems.append(f"{where}: '{field}' must be a number >= {low}, got {value!r}")
    else:
        out[field] = float(value)


def _raise_if(problems: list[str], summary: str) -> None:
    if problems:
        raise InvalidArgument(f"{summary}: " + "; ".join(problems), problems)

"""Types that are not Conductor's: a task of type `charge_card` runs on the workers that serve
task type `charge_card`, under the task definition named after the type (or, in a Conductor
definition, after the task, as Conductor's user-defined tasks do). The registry answers with
this kind for every type name it does not know (`kinds.kind_for`); the validator only lets such
a task through when that task definition exists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Checker, Kind
from .steps import run_on_worker


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], *_: Any) -> None:
    out["taskType"] = task["type"]


def task_defs_named(task: Mapping[str, Any]) -> tuple[str, ...]:
    """Before validation, where its task definition may be: named after the type or after the task
    (a validated task, `taskType` set, finds it among every task definition)."""
    kind, name = task.get("type"), task.get("name")
    if not isinstance(kind, str) or "taskType" in task:
        return ()
    return (kind, name) if isinstance(name, str) else (kind,)


def names_a_type(task: Mapping[str, Any]) -> bool:
    """Its task definition is found by another name than the task's: every one must be seen."""
    return isinstance(task.get("type"), str)


KIND = Kind(names=(), role="worker", fields=frozenset(), validate=validate, decide=run_on_worker,
            task_defs_named=task_defs_named, needs_every_task_def=names_a_type)

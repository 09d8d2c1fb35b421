"""SIMPLE: the work of a task definition, run by a worker that serves it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Box, Checker, Kind, Shape
from .steps import run_on_worker


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
    name = task.get("name")
    if not isinstance(name, str) or not name:
        checker.problems.append(f"{where}: 'name' (the task definition to run) is required")
    elif "taskDefinition" not in out:
        checker.task_def_exists(name, where)


def task_defs_named(task: Mapping[str, Any]) -> tuple[str, ...]:
    """The task definition it runs under, unless it carries its own (`taskDefinition`)."""
    name = task.get("name")
    return (name,) if isinstance(name, str) and not isinstance(task.get("taskDefinition"), dict) else ()


def graph(task: Mapping[str, Any]) -> Shape:
    """A box titled with the task definition's name."""
    return Box(str(task.get("name", "SIMPLE")))


KIND = Kind(names=("SIMPLE",), role="worker", fields=frozenset(), validate=validate, decide=run_on_worker,
            graph=graph, task_defs_named=task_defs_named)

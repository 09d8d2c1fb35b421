"""SET_VARIABLE: its resolved inputParameters become workflow variables (`${workflow.variables.x}`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..schema import WorkflowTask
from .base import Kind, Outcome
from .checks import no_fields
from .steps import instant

if TYPE_CHECKING:
    from ..decider.walk import Walk


def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    def apply(inputs: dict[str, Any]) -> dict[str, Any]:
        walk.set_variables(inputs)
        return {}
    return instant(walk, node, suffix, apply)[0]


KIND = Kind(names=("SET_VARIABLE",), role="system", fields=frozenset(), validate=no_fields, decide=decide)

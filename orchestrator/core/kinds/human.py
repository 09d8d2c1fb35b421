"""HUMAN: waits, in progress, until completed from outside (a person, through the API)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import statuses as st
from ..schema import WorkflowTask
from .base import Kind, Outcome
from .checks import no_fields
from .steps import follow_waiting, key

if TYPE_CHECKING:
    from ..decider.walk import Walk


def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    task_key = key(node, suffix)
    task = walk.latest.get(task_key) or walk.add(node, task_key, status=st.IN_PROGRESS)
    return follow_waiting(walk, node, task)


KIND = Kind(names=("HUMAN",), role="system", fields=frozenset(), validate=no_fields, decide=decide)

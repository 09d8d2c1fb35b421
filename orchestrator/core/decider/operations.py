"""Operator commands that change a workflow's history: retry, rerun, skip and restart.

The API stores each command in the workflow (field `c:<n>`, in the same Lua call that
sets the status it needs) and the decider applies it here, so these operations are as
atomic, fenced and testable as every other transition. Pause, resume, terminate and
signals need no history change and are done by the API's scripts directly.
"""

from __future__ import annotations

from typing import Any

from .. import statuses as st
from ..definitions import iter_nodes
from ..schema import WorkflowTask
from .walk import Walk


def apply_commands(walk: Walk) -> None:
    for command in sorted(walk.wf.commands, key=lambda c: c["field"]):
        HANDLERS[command["op"]](walk, command)
        walk.decision.consumed_commands.append(command["field"])
        walk.decision.log.append(f"applied operator command {command['op']}")


def _retry(walk: Walk, command: dict[str, Any]) -> None:
    """Give every instance that ended unsuccessfully a fresh attempt and a fresh retry budget."""
    walk.retrying = {t.spec.key for t in walk.instances() if t.runtime.status in st.UNSUCCESSFUL_TASK
                     and not t.spec.extra.get("compensates")}
    walk.decision.reset_result = True


def _rerun(walk: Walk, command: dict[str, Any]) -> None:
    """Forget everything from the first instance of `key` on, then run again from there."""
    key = command["key"]
    first = min((t.spec.seq for t in walk.wf.tasks if t.spec.key == key), default=None)
    if first is None:
        walk.decision.log.append(f"rerun: '{key}' never ran; running on from where the workflow stands")
        return
    forgotten_ids = {t.task_id for t in walk.instances() if t.spec.seq >= first}
    for task in walk.active():
        if task.spec.seq >= first:
            walk.stop(task, st.CANCELED, "rerun")
    walk.decision.changed_runtimes = {k: v for k, v in walk.decision.changed_runtimes.items()
                                      if k not in forgotten_ids}
    walk.decision.delete_tasks += [t.task_id for t in walk.wf.tasks if t.spec.seq >= first]
    walk.reset([t for t in walk.wf.tasks if t.spec.seq < first])
    if command.get("input") is not None:
        walk.input_overrides[key] = command["input"]
    walk.decision.reset_result = True


def _skip(walk: Walk, command: dict[str, Any]) -> None:
    """Mark a task SKIPPED: the flow goes on as if it had completed with no output."""
    key = command["key"]
    task = walk.latest.get(key)
    if task is not None:
        if task.runtime.status in st.ACTIVE_TASK:
            walk.stop(task, st.SKIPPED, "skipped by an operator")
        return
    node = _node_for(walk.definition["tasks"], key.split("__", 1)[0])
    if node is not None:
        task_type = walk.queue_of(node["name"]) if node["type"] == "SIMPLE" else ""
        walk.add(node, key, status=st.SKIPPED, task_type=task_type, input={}, reason="skipped by an operator")


def _restart(walk: Walk, command: dict[str, Any]) -> None:
    """Start over from the first task, with the same input (and the latest definition if asked)."""
    if command.get("snapshot"):
        snapshot = command["snapshot"]
        walk.decision.snapshot = snapshot
        walk.definition = snapshot["workflow"]
        walk.task_defs.update(snapshot["taskDefs"])
        walk.sub_workflows.update(snapshot.get("subWorkflows", {}))
    walk.decision.delete_tasks += [t.task_id for t in walk.wf.tasks]
    walk.variables.clear()
    walk.set_variables(dict(walk.definition.get("variables", {})))
    walk.reset([])
    walk.decision.reset_result = True


def _node_for(nodes: list[WorkflowTask], ref: str) -> WorkflowTask | None:
    return next((n for n in iter_nodes(nodes) if n["taskReferenceName"] == ref), None)


HANDLERS = {"retry": _retry, "rerun": _rerun, "skip": _skip, "restart": _restart}

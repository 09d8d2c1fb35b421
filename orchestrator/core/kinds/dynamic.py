"""DYNAMIC: a worker task whose task definition is named by an input parameter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import statuses as st
from ..schema import WorkflowTask
from ..values import seconds_ms
from .base import BLOCKED, Checker, Kind, Outcome, always
from .steps import key, shown

if TYPE_CHECKING:
    from ..decider.walk import Walk


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
    param = task.get("dynamicTaskNameParam")
    if not isinstance(param, str) or param not in out["inputParameters"]:
        checker.problems.append(f"{where}: 'dynamicTaskNameParam' must name a key of 'inputParameters' (the input "
                                "that holds the name of the task definition to run)")
    out["dynamicTaskNameParam"] = param


def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    task_key = key(node, suffix)
    task = walk.latest.get(task_key)
    if task is None:
        task_id = walk.new_id()
        inputs = walk.input_for(node, task_key, task_id)
        param = node["dynamicTaskNameParam"]
        name = inputs.get(param)
        if not isinstance(name, str) or name not in walk.task_defs:
            task = walk.add(node, task_key, status=st.FAILED_WITH_TERMINAL_ERROR, input=inputs, task_id=task_id,
                            reason=f"'{param}' resolved to {shown(name)}, which names no task definition in this "
                                   "run's snapshot of definitions")
            return walk.unsuccessful(node, task)
        walk.schedule_worker_task(node, task_key, name, attempt=0, delay_ms=seconds_ms(node["startDelay"]),
                                  input=inputs)
        return BLOCKED
    return walk.follow_worker_task(node, task, task.spec.task_type)


KIND = Kind(names=("DYNAMIC",), role="worker", fields=frozenset({"dynamicTaskNameParam"}), validate=validate,
            decide=decide,
            runs_user_code=True, needs_every_task_def=always)   # its task definition is named at run time

"""Sagas: undo the completed steps of a failed (or terminated-with-compensation) workflow.

Every completed step whose definition names a `compensation` task gets that task run,
one at a time, newest step first, each with its own task definition's retries. The
compensation's input templates see the whole workflow scope, so `${book_hotel.output.id}`
names what to cancel. All done: COMPENSATED; one gives up: COMPENSATION_FAILED.
"""

from __future__ import annotations


from .. import state as m
from .. import statuses as st
from ..definitions import iter_nodes
from ..schema import Compensation, WorkflowTask
from .walk import BLOCKED, DONE, Outcome, Walk, failure

SUFFIX = "__compensation"


def _compensations(walk: Walk) -> dict[str, Compensation]:
    return {n["taskReferenceName"]: n["compensation"] for n in iter_nodes(walk.definition["tasks"])
            if n.get("compensation")}


def _to_undo(walk: Walk) -> list[m.TaskState]:
    """Completed instances with a compensation, newest first."""
    compensations = _compensations(walk)
    done = [t for t in walk.instances()
            if t.spec.ref in compensations and t.runtime.status == st.TASK_COMPLETED
            and not t.spec.extra.get("compensates")]
    return sorted(done, key=lambda t: (t.runtime.ended_at_ms, t.spec.seq), reverse=True)


def has_compensations(walk: Walk) -> bool:
    return bool(_to_undo(walk))


def compensate(walk: Walk) -> Outcome:
    compensations = _compensations(walk)
    for done in _to_undo(walk):
        spec = compensations[done.spec.ref]
        key = done.spec.key + SUFFIX
        node = WorkflowTask(name=spec["name"], taskReferenceName=done.spec.ref + SUFFIX, type="SIMPLE",
                            inputParameters=spec["inputParameters"], description="", optional=False, startDelay=0)
        task = walk.latest.get(key)
        if task is None:
            walk.schedule_worker_task(node, key, spec["name"], attempt=0,
                                      extra={"compensates": done.spec.key},
                                      input=walk.resolve(spec["inputParameters"]))
            return BLOCKED
        outcome = walk.follow_worker_task(node, task, spec["name"])
        if outcome.kind == "FAILED":
            return failure(f"compensation of '{done.spec.key}' failed: {outcome.reason}", st.COMPENSATION_FAILED)
        if not outcome.done:
            return outcome
    return DONE

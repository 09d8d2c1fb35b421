"""EXCLUSIVE_JOIN (after a SWITCH/DECISION): the output of whichever `joinOn` task ran (else of
`defaultExclusiveJoinTask`'s), once it is done."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import statuses as st
from ..schema import WorkflowTask
from .base import BLOCKED, DONE, Checker, Kind, Outcome
from .steps import waiting_instance

if TYPE_CHECKING:
    from ..decider.walk import Walk


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
             _previous: Any) -> None:
    for field in ("joinOn", "defaultExclusiveJoinTask"):
        refs = task.get(field) or []
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            checker.problems.append(f"{where}: '{field}' must be a list of task references")
            refs = []
        missing = [r for r in refs if r not in known]
        if missing:
            checker.problems.append(f"{where}: '{field}' names unknown reference(s) {', '.join(missing)}")
        out[field] = refs
    if not out["joinOn"]:
        checker.problems.append(f"{where}: 'joinOn' must name the last task of each branch it joins")


def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    task, settled = waiting_instance(walk, node, suffix)
    if settled is not None:
        return settled
    for refs in (node.get("joinOn") or [], node.get("defaultExclusiveJoinTask") or []):
        ran = [t for t in (walk.latest.get(ref + suffix) for ref in refs) if t is not None]
        if ran:
            joined = ran[-1]
            if joined.runtime.status in st.ACTIVE_TASK:
                return BLOCKED
            if joined.runtime.status not in st.DONE_TASK:
                walk.change(task, status=st.FAILED, reason=f"'{joined.spec.key}' ended {joined.runtime.status}")
                return walk.unsuccessful(node, task)
            walk.complete(task, dict(joined.output or {}))
            return DONE
    walk.complete(task, {})
    return DONE


KIND = Kind(names=("EXCLUSIVE_JOIN",), role="system", fields=frozenset({"joinOn", "defaultExclusiveJoinTask"}),
            validate=validate, decide=decide)

"""JOIN: right after a FORK_JOIN or FORK_JOIN_DYNAMIC, waits for `joinOn` (or every branch of
that fork); output: each joined task's output under its reference."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import statuses as st
from ..schema import WorkflowTask
from .base import BLOCKED, DONE, Checker, Kind, Outcome
from .steps import waiting_instance

if TYPE_CHECKING:
    from ..decider.walk import Walk

FORKS = ("FORK_JOIN", "FORK_JOIN_DYNAMIC")


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
             previous: dict[str, Any] | None) -> None:
    if previous is None or previous.get("type") not in FORKS:
        checker.problems.append(f"{where}: a JOIN must directly follow a FORK_JOIN or FORK_JOIN_DYNAMIC")
        out["joinOn"] = []
        return
    join_on = task.get("joinOn", [])
    if join_on is None:
        join_on = []
    if not isinstance(join_on, list) or not all(isinstance(r, str) for r in join_on):
        checker.problems.append(f"{where}: 'joinOn' must be a list of task references")
        join_on = []
    missing = [r for r in join_on if r not in known]
    if missing and previous.get("type") == "FORK_JOIN_DYNAMIC" and checker.conductor:
        checker.warn(f"{where}: 'joinOn' names reference(s) {', '.join(missing)} that no task of this definition "
                     "has; the JOIN waits for every dynamic branch")
        join_on = []
    elif missing:
        checker.problems.append(f"{where}: 'joinOn' names unknown reference(s) {', '.join(missing)}")
    out["joinOn"] = join_on


def decide(walk: Walk, node: WorkflowTask, suffix: str, previous: WorkflowTask | None) -> Outcome:
    assert previous is not None, "validation puts a fork right before a JOIN"
    task, settled = waiting_instance(walk, node, suffix)
    if settled is not None:
        return settled
    fork_key = previous["taskReferenceName"] + suffix
    if node["joinOn"]:
        joined = [walk.latest.get(ref + suffix) for ref in node["joinOn"]]
        ready = all(t is not None and t.runtime.status in st.DONE_TASK for t in joined)
    else:   # every branch of the fork: read only once they are done (a wide fork has many)
        ready = walk.fork_done.get(fork_key, False)
        if not ready:
            return BLOCKED
        fork = walk.latest.get(fork_key)
        refs = (fork.output or {}).get("forkedTasks") if fork is not None and fork.output else None
        joined = [walk.latest.get(r + suffix) for r in refs] if refs else []
    if not ready:
        return BLOCKED
    walk.complete(task, {t.spec.ref: t.output or {} for t in joined if t is not None})
    return DONE


KIND = Kind(names=("JOIN",), role="system", fields=frozenset({"joinOn"}), validate=validate, decide=decide)

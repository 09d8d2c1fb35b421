"""FORK_JOIN: run the task lists of `forkTasks` side by side; the JOIN right after it waits
for them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..limits import MAX_FORK_BRANCHES
from ..schema import WorkflowTask
from .base import Checker, Kind, Lanes, NestedTasks, Outcome, Shape, type_title
from .steps import instant, key, run_branches

if TYPE_CHECKING:
    from ..decider.walk import Walk


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
             _previous: Any) -> None:
    branches = task.get("forkTasks")
    if not isinstance(branches, list) or not branches:
        checker.problems.append(f"{where}: 'forkTasks' must be a non-empty list of task lists")
        out["forkTasks"] = []
        return
    if len(branches) > MAX_FORK_BRANCHES:
        checker.problems.append(f"{where}: 'forkTasks' has {len(branches)} branches, more than the limit of "
                                f"{MAX_FORK_BRANCHES}; fork fewer branches or use a SUB_WORKFLOW per group")
        out["forkTasks"] = []
        return
    before = set(known)
    out["forkTasks"] = []
    for index, branch in enumerate(branches):
        branch_known = set(before)
        out["forkTasks"].append(checker.sequence(branch, f"{where}.forkTasks[{index}]", branch_known))
        known |= branch_known


def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    outcome, _ = instant(walk, node, suffix, lambda inputs: {})
    if not outcome.done:
        return outcome
    return run_branches(walk, key(node, suffix), node["forkTasks"], suffix)


def graph(task: Mapping[str, Any]) -> Shape:
    """A lane per branch."""
    return Lanes(type_title(task), [("", branch) for branch in task.get("forkTasks", [])])


KIND = Kind(names=("FORK_JOIN",), role="container", fields=frozenset({"forkTasks"}), validate=validate,
            decide=decide, graph=graph, children=(NestedTasks("forkTasks", "branches"),))

"""How many task objects `decide` makes (issue 21: CPU per workflow).

A decision reads the workflow's latest instances and changes its own copies of those it
changes. It used to copy every instance it read: each decision the instance it found ended, and
the decision that ends a workflow every instance (it reads them all to find what is still active
and the last output), so a three-step workflow's decisions made 8 TaskStates for its 3 tasks, a
10-branch fork's 96 for 12. Now an instance that ended done is read as the state holds it (no
decision changes one) and only the others are copied; a changed runtime is written out field by
field, not by `dataclasses.replace`. Here whole runs go through a node's pure path (the result put
in, the decision, the decision applied with its tasks handed to the node's worker) and the objects
`decide` makes are counted as calls of their classes' `__init__`: counts, not times, so the
machine's load does not move them.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from orchestrator.core import state as m
from orchestrator.core import statuses as st
from orchestrator.core.apply import apply_handing_over, with_result
from orchestrator.core.decider import Decision, decide
from sim import START, Sim, task_defs

DEFS = task_defs("noop")
INPUT = {"n": "${workflow.input.n}"}   # what each step of the bench's workflows reads (bench/definitions.py)
Shape = tuple[dict[str, Any], dict[str, Any]]


def sequence(n: int) -> Shape:
    return {"name": "sequence", "outputParameters": INPUT,
            "tasks": [{"name": "noop", "taskReferenceName": f"s{i}", "inputParameters": INPUT} for i in range(n)]}, \
        {"n": 1}


def fork(n: int) -> Shape:
    branches = [[{"name": "noop", "taskReferenceName": f"b{i}", "inputParameters": INPUT}] for i in range(n)]
    return {"name": "fork", "tasks": [{"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
                                       "forkTasks": branches},
                                      {"name": "join", "taskReferenceName": "join", "type": "JOIN"}]}, {"n": 1}


def loop(n: int) -> Shape:
    return {"name": "loop", "tasks": [{"name": "each", "taskReferenceName": "each", "type": "DO_WHILE",
                                       "items": "${workflow.input.items}",
                                       "loopOver": [{"name": "noop", "taskReferenceName": "step",
                                                     "inputParameters": INPUT}]}]}, \
        {"items": list(range(n)), "n": 1}


def made_by_decide(shape: Shape) -> tuple[collections.Counter[str], m.WorkflowState]:
    """Run a workflow of `shape` to its end, one worker result at a time; count what its decisions made:
    TaskStates, TaskRuntimes, `dataclasses.replace` calls, and the decisions themselves."""
    counts: collections.Counter[str] = collections.Counter()
    names = {m.TaskState.__init__.__code__: "TaskState", m.TaskRuntime.__init__.__code__: "TaskRuntime",
             dataclasses.replace.__code__: "replace"}

    def count(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            name = names.get(frame.f_code)
            if name is not None:
                counts[name] += 1

    ids = (f"t{i}" for i in itertools.count())
    new_id: Callable[[], str] = lambda: next(ids)   # noqa: E731

    def decided(state: m.WorkflowState) -> Decision:
        counts["decisions"] += 1
        sys.setprofile(count)
        try:
            return decide(state, START, new_id)
        finally:
            sys.setprofile(None)

    state = Sim(*shape[:1], DEFS).start(shape[1])
    while True:
        decision = decided(state)
        state = apply_handing_over(state, decision, START, {task_id: "w" for _, task_id in decision.enqueue})
        if state.status != st.RUNNING:
            return counts, state
        running = next(t for t in reversed(state.tasks) if t.runtime.status == st.IN_PROGRESS
                       and t.spec.kind == "SIMPLE")
        state = with_result(state, running.task_id, st.TASK_COMPLETED, {}, "", START)


@pytest.mark.parametrize("n", [3, 20])
def test_a_sequence_makes_only_its_tasks(n: int) -> None:
    made, state = made_by_decide(sequence(n))
    assert state.status == st.COMPLETED and state.output == {"n": 1}
    # one TaskState and one TaskRuntime per task the workflow runs; nothing copied to be read
    # (before: 8 TaskStates for 3 tasks, 59 for 20)
    assert made["TaskState"] == n, made
    assert made["TaskRuntime"] == n, made
    assert made["replace"] == 0, made


def test_a_fork_copies_only_what_is_active() -> None:
    made, state = made_by_decide(fork(10))
    assert state.status == st.COMPLETED and len(state.tasks) == 12
    # 12 tasks (fork, 10 branches, join); each of the 11 decisions copies the join and the branches
    # still in progress (4.5 on average): 12 + 11 + 44 = 67 (before: 96, every branch joined was copied)
    assert made["TaskState"] <= 67, made
    # 12 tasks, the fork's and the join's instance completed
    assert made["TaskRuntime"] <= 14, made
    assert made["replace"] == 0, made   # (before: the join's completion)


def test_a_loop_copies_only_what_is_active() -> None:
    made, state = made_by_decide(loop(20))
    assert state.status == st.COMPLETED and len(state.tasks) == 21
    # 21 tasks; the loop's instance, in progress, copied by each of the 20 decisions after the start
    # (before: 80, each iteration's ended step copied too, and every instance by the last decision)
    assert made["TaskState"] <= 41, made
    assert made["TaskRuntime"] <= 22, made   # 21 tasks, the loop's completion
    assert made["replace"] == 0, made

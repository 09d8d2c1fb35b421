"""How many state objects a step makes on a node's hot path (issue 21: CPU per workflow).

A node decides a worker's result from its memory of the workflow (cluster/state_cache.py): the
result put in (`with_result`), the decision (`decide`), and what the node keeps of its write (the
decision applied, with the task it handed to its own worker marked as that worker's). Each new
WorkflowState, TaskState and TaskRuntime is made in Python, and `dataclasses.replace` looks up
every field of its class on each call; the profile of a node at 64 in flight showed both. Here one
three-step no-op workflow runs that path, with its real StateCache, and the objects made are
counted as the calls of their classes' `__init__` (which `replace` calls too) and of
`WorkflowState.copied`, and `replace` as the calls it gets: counts, not times, so the machine's
load does not move them. Before (e1974df) a workflow made 9 WorkflowStates, 17 TaskStates and 9 TaskRuntimes and
called `replace` 15 times: the state after a decision was built twice (`apply`, then `with_tasks`
for the task handed over), and each task handed over once more.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from orchestrator.cluster.state_cache import StateCache
from orchestrator.core import state as m
from orchestrator.core import statuses as st
from orchestrator.core.apply import with_result
from orchestrator.core.decider import decide
from orchestrator.store import ApplyOutcome, ApplyResult, ClaimedTask
from sim import START, Sim, task_defs

STEPS = 3
COUNTED = (m.WorkflowState, m.TaskState, m.TaskRuntime)


class Node:
    """The pure part of one node's work on one workflow, with its real state cache: the start's
    decision and each result's, every task handed to the node's own worker in the same write."""

    def __init__(self) -> None:
        self.ids = (f"t{i}" for i in itertools.count())
        self.cache = StateCache()
        definition = {"name": "three", "tasks": [{"name": "noop", "taskReferenceName": f"s{i}"}
                                                 for i in range(STEPS)]}
        self.created = Sim(definition, task_defs("noop")).start({})

    def run(self) -> m.WorkflowState:
        """Start, then each task's result until the workflow ends; the last state the cache kept."""
        state = self._decided(self.created)
        for _ in range(STEPS):
            running = next(t for t in state.tasks if t.runtime.status == st.IN_PROGRESS)
            state = self._decided(with_result(state, running.task_id, st.TASK_COMPLETED, {}, "", START))
        return state

    def _decided(self, state: m.WorkflowState) -> m.WorkflowState:
        decision = decide(state, START, lambda: next(self.ids))
        specs = {task.task_id: task.spec for task in decision.new_tasks}
        handed = [ClaimedTask(state.workflow_id, specs[task_id], START + 60_000) for _, task_id in decision.enqueue]
        self.cache.applied(state, decision, ApplyOutcome(ApplyResult.OK, handed=handed), START,
                           {task.spec.task_id: "w1" for task in handed})
        return self.cache.get(state.workflow_id) or state


@pytest.fixture
def made() -> Iterator[collections.Counter[str]]:
    """Counts, while the test runs, the objects of the counted classes made and the calls of
    `dataclasses.replace` (seen as calls of their code: nothing of the classes is changed)."""
    counts: collections.Counter[str] = collections.Counter()
    names = {cls.__init__.__code__: cls.__name__ for cls in COUNTED}
    names[m.WorkflowState.copied.__code__] = m.WorkflowState.__name__   # a copy made without `__init__`
    names[dataclasses.replace.__code__] = "replace"

    def calls(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            name = names.get(frame.f_code)
            if name is not None:
                counts[name] += 1

    sys.setprofile(calls)
    try:
        yield counts
    finally:
        sys.setprofile(None)


def test_a_workflow_runs_through_the_node_to_its_end() -> None:
    node = Node()
    assert node.run().revision == 2 * STEPS   # the last write (it ended the workflow) left the cache
    assert len(node.cache) == 0


def test_a_step_makes_each_state_once(made: collections.Counter[str]) -> None:
    node = Node()   # the workflow as created is not the path's
    made.clear()
    node.run()
    per_step = {name: made[name] / STEPS for name in ("WorkflowState", "TaskState", "TaskRuntime")}
    # a state with the result, a state after the decision (the task handed over folded in); the start's
    # and the ending step's decisions keep nothing: 2 * 3 results
    assert made["WorkflowState"] <= 2 * STEPS, per_step
    # the attempt the result ends; the decision's copies and new attempt (decider/walk.py); the new
    # attempt once in the state kept, handed over in the same object
    assert made["TaskState"] <= 9, per_step   # 14 before the decider stopped copying finished tasks
    # the attempt the result ends; the new attempt; that attempt handed over (the decision keeps its own)
    assert made["TaskRuntime"] <= 3 * STEPS, per_step
    assert made["replace"] == 0

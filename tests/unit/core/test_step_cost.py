"""A step of a workflow costs no more when the workflow is long (issue 21).

A node decides a worker's result from its memory of the workflow: the result put in (`with_result`),
the decision (`decide`), the state it leaves with the tasks handed to the node's workers marked as
theirs (`apply_handing_over`). Here that path runs on workflows of 10 and of 400 steps (a sequence, and a
DO_WHILE over as many items), and what one step costs at the middle of each is counted as the Python
functions it calls: a count, not a time, so the machine's load does not move it. Before the decider
kept its index of the tasks from one step to the next, a step of the 400-step sequence made 11 times
the calls of one of the 10-step sequence (it copied and exposed every task so far and walked every
node from the first).
"""

from __future__ import annotations

import itertools
import sys
from types import FrameType
from typing import Any

import pytest

from orchestrator.core import state as m
from orchestrator.core import statuses as st
from orchestrator.core.apply import apply_handing_over, with_result
from orchestrator.core.decider import Decision, decide
from sim import START, Sim, task_defs

DEFS = task_defs("noop")


def sequence(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"name": "sequence", "tasks": [{"name": "noop", "taskReferenceName": f"s{i}"} for i in range(n)]}, {}


def loop(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"name": "loop", "tasks": [{"name": "each", "taskReferenceName": "each", "type": "DO_WHILE",
                                       "items": "${workflow.input.items}",
                                       "loopOver": [{"name": "noop", "taskReferenceName": "step"}]}]}, \
        {"items": list(range(n))}


class Node:
    """The pure part of a node's step, from its memory of one workflow."""

    def __init__(self, definition: dict[str, Any], workflow_input: dict[str, Any]) -> None:
        self.ids = (f"t{i}" for i in itertools.count())
        self.state = Sim(definition, DEFS).start(workflow_input)
        self._applied(self.state, self._decide(self.state))

    def _decide(self, state: m.WorkflowState) -> Decision:
        return decide(state, START, lambda: next(self.ids))

    def _applied(self, state: m.WorkflowState, decision: Decision) -> None:
        # every task queued is taken by this node's worker in the same step
        self.state = apply_handing_over(state, decision, START, {task_id: "w" for _, task_id in decision.enqueue})

    def step(self) -> None:
        """The worker's result for the task in progress, and what follows from it."""
        running = next(t for t in reversed(self.state.tasks) if t.runtime.status == st.IN_PROGRESS
                       and t.spec.kind == "SIMPLE")
        decided = with_result(self.state, running.task_id, st.TASK_COMPLETED, {}, "", START)
        self._applied(decided, self._decide(decided))


def calls_per_step(shape: Any, n: int, steps: int = 5) -> float:
    """Python function calls of one step at the middle of a workflow of `n` steps."""
    node = Node(*shape(n))
    for _ in range(n // 2):
        node.step()
    calls = 0

    def count(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1
    sys.setprofile(count)
    try:
        for _ in range(steps):
            node.step()
    finally:
        sys.setprofile(None)
    return calls / steps


@pytest.mark.parametrize("shape", [sequence, loop], ids=["sequence", "loop"])
def test_a_step_costs_no_more_in_a_long_workflow(shape: Any) -> None:
    short, long = calls_per_step(shape, 10), calls_per_step(shape, 400)
    assert long <= 1.2 * short, f"a step of 400 makes {long:.0f} calls, one of 10 {short:.0f}"


def test_the_long_workflow_still_completes() -> None:
    node = Node(*sequence(400))
    for _ in range(400):
        node.step()
    assert node.state.status == st.COMPLETED
    assert [t.spec.key for t in node.state.tasks] == [f"s{i}" for i in range(400)]

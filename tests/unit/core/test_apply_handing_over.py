"""What a node remembers of its own write (`apply_handing_over`) is `apply`'s workflow with the tasks the
write handed to the node's workers taken as the store's scripts take one, built as one new state; and
neither the workflow it started from nor the decision is changed by it (the decision is what the store
encoded, the workflow may be held by the node's memory or by another step)."""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from typing import Any

import pytest

from orchestrator.core import state as m
from orchestrator.core import statuses as st
from orchestrator.core.apply import apply, apply_handing_over, with_result
from orchestrator.core.decider import Decision, decide
from sim import START, Sim, task_defs

DEFS = task_defs("fetch", "charge")
NOW = START + 1_000

SHAPES: dict[str, dict[str, Any]] = {
    "sequence": {"name": "sequence", "tasks": [{"name": "fetch", "taskReferenceName": "a"},
                                               {"name": "charge", "taskReferenceName": "b"}]},
    # system tasks with outputs made and ended in the same decision as the worker task after them
    "system tasks first": {"name": "system", "tasks": [
        {"name": "calc", "taskReferenceName": "calc", "type": "INLINE",
         "inputParameters": {"evaluatorType": "javascript", "expression": "1 + 1"}},
        {"name": "set", "taskReferenceName": "set", "type": "SET_VARIABLE", "inputParameters": {"x": 1}},
        {"name": "fetch", "taskReferenceName": "a"}]},
    "fork": {"name": "forked", "tasks": [
        {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
         "forkTasks": [[{"name": "fetch", "taskReferenceName": "b1"}],
                       [{"name": "charge", "taskReferenceName": "b2"}]]},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN", "joinOn": ["b1", "b2"]}]},
    # queued by a later decision than the one that made it: a changed attempt, not a new one
    "start delay": {"name": "delayed", "tasks": [{"name": "fetch", "taskReferenceName": "a", "startDelay": 2}]},
}


def _decision_queueing(shape: str) -> tuple[m.WorkflowState, Decision, int]:
    """The workflow, the first decision of it that queues a worker task, and when it is made."""
    ids = (f"t{i}" for i in itertools.count())
    state, now = Sim(SHAPES[shape], DEFS).start({}), NOW
    decision = decide(state, now, lambda: next(ids))
    while not decision.enqueue:
        assert decision.wake_at_ms is not None
        state, now = apply(state, decision, now)[0], decision.wake_at_ms
        decision = decide(state, now, lambda: next(ids))
    return state, decision, now


def _as_apply_and_take(state: m.WorkflowState, decision: Decision, now: int,
                       handed_to: dict[str, str]) -> m.WorkflowState:
    """What the node kept before: `apply`'s workflow, then a copy with each task handed over replaced
    by one taken as the scripts' `take` takes it."""
    after, _ = apply(state, decision, now)
    return replace(after, tasks=[
        m.TaskState(t.spec, replace(t.runtime, status=st.IN_PROGRESS, worker_id=handed_to[t.task_id],
                                    started_at_ms=now, queued=False), t.output)
        if t.task_id in handed_to else t for t in after.tasks])


def _snapshot(state: m.WorkflowState, decision: Decision) -> Any:
    """A deep copy of what the workflow and the decision hold, to compare with afterwards."""
    return copy.deepcopy(([(t.spec, t.runtime, t.output) for t in state.tasks], state.revision, state.status,
                          [(t.spec, t.runtime, t.output) for t in decision.new_tasks], decision.changed_runtimes,
                          decision.outputs))


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("handing", ["every task", "none"])
def test_a_write_handing_tasks_over_leaves_what_apply_and_the_hand_over_say(shape: str, handing: str) -> None:
    state, decision, now = _decision_queueing(shape)
    handed_to = {task_id: f"w{i}" for i, (_, task_id) in enumerate(decision.enqueue)} if handing == "every task" else {}
    before = _snapshot(state, decision)

    kept = apply_handing_over(state, decision, now, handed_to)

    assert kept == _as_apply_and_take(state, decision, now, handed_to)
    assert _snapshot(state, decision) == before, "the workflow or the decision was changed"
    for task_id, worker_id in handed_to.items():
        task = kept.task(task_id)
        assert task is not None and task.runtime.status == st.IN_PROGRESS and task.runtime.worker_id == worker_id
        assert task.runtime.started_at_ms == now and not task.runtime.queued


def test_the_next_step_is_decided_from_the_kept_state_as_from_a_fresh_read() -> None:
    """The kept state carries the decider's index of its tasks: a decision of it equals one of the
    same workflow read afresh (`replace` keeps no index)."""
    state, decision, _ = _decision_queueing("sequence")
    [(_, task_id)] = decision.enqueue
    kept = apply_handing_over(state, decision, NOW, {task_id: "w1"})
    decided = with_result(kept, task_id, st.TASK_COMPLETED, {"ok": True}, "", NOW + 1)
    ids, same = (f"n{i}" for i in itertools.count()), (f"n{i}" for i in itertools.count())
    assert decide(decided, NOW + 2, lambda: next(ids)) == decide(replace(decided), NOW + 2, lambda: next(same))


def test_an_empty_decision_leaves_the_workflow_itself() -> None:
    state, decision, _ = _decision_queueing("sequence")
    kept = apply_handing_over(state, decision, NOW, {})
    assert apply_handing_over(kept, Decision(), NOW, {}) is kept

"""Property tests: random definitions validate or fail clearly; valid ones always reach an end."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core import state as m
from orchestrator.core import statuses as ss
from orchestrator.core.definitions import validate_workflow_def
from sim import Sim, task_defs

DEFS = task_defs("a", "b", "c", retryCount=1)
WORKER_OUTCOMES = st.sampled_from([ss.TASK_COMPLETED, ss.TASK_COMPLETED, ss.TASK_COMPLETED, ss.TASK_FAILED,
                                   ss.FAILED_WITH_TERMINAL_ERROR])


@st.composite
def task_lists(draw: st.DrawFn, refs: Any, depth: int = 0) -> list[dict[str, Any]]:
    """A non-empty list of tasks; containers nest up to depth 2."""
    kinds = ["SIMPLE", "SIMPLE", "NOOP", "SET_VARIABLE", "INLINE", "WAIT"]
    if depth < 2:
        kinds += ["SWITCH", "FORK_JOIN", "DO_WHILE", "FORK_JOIN_DYNAMIC"]
    out: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(kinds))
        ref = f"r{next(refs)}"
        task: dict[str, Any] = {"taskReferenceName": ref, "type": kind}
        if kind == "SIMPLE":
            task.update(name=draw(st.sampled_from(["a", "b", "c"])), optional=draw(st.booleans()),
                        inputParameters={"x": "${workflow.input.x}"})
        elif kind == "SET_VARIABLE":
            task["inputParameters"] = {"v": draw(st.integers(0, 9))}
        elif kind == "INLINE":
            task.update(expression="$.n + 1", inputParameters={"n": draw(st.integers(0, 9))})
        elif kind == "WAIT":
            task["duration"] = draw(st.integers(0, 5))
        elif kind == "SWITCH":
            task.update(evaluatorType="expression", expression="$.x > 5 ? 'hi' : 'lo'",
                        inputParameters={"x": "${workflow.input.x}"},
                        decisionCases={"hi": draw(task_lists(refs, depth + 1))},
                        defaultCase=draw(task_lists(refs, depth + 1)))
        elif kind == "FORK_JOIN":
            branches = [draw(task_lists(refs, depth + 1)) for _ in range(draw(st.integers(1, 3)))]
            task["forkTasks"] = branches
            out.append(task)
            task = {"taskReferenceName": f"r{next(refs)}", "type": "JOIN"}
        elif kind == "FORK_JOIN_DYNAMIC":
            task.update(forkTaskName="a", forkTaskInputs=[{"i": i} for i in range(draw(st.integers(0, 3)))])
            out.append(task)
            task = {"taskReferenceName": f"r{next(refs)}", "type": "JOIN"}
        elif kind == "DO_WHILE":
            task.update(items=list(range(draw(st.integers(0, 3)))), loopOver=draw(task_lists(refs, depth + 1)))
        out.append(task)
    return out


@st.composite
def definitions(draw: st.DrawFn) -> dict[str, Any]:
    return {"name": "random", "tasks": draw(task_lists(itertools.count()))}


JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                    max_size=3), max_leaves=10)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid definition with one part replaced by something random."""
    definition = draw(definitions())
    tasks = list(_walk(definition["tasks"]))
    victim = draw(st.sampled_from(tasks))
    field = draw(st.sampled_from(sorted(victim) + ["type", "taskReferenceName", "loopOver", "expression"]))
    victim[field] = draw(JSONISH)
    return definition


def _walk(tasks: list[dict[str, Any]]) -> Any:
    for task in tasks:
        yield task
        for branch in task.get("forkTasks", []):
            yield from _walk(branch)
        for branch in task.get("decisionCases", {}).values():
            yield from _walk(branch)
        yield from _walk(task.get("defaultCase", []))
        yield from _walk(task.get("loopOver", []))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_any_definition_validates_or_fails_with_named_problems(definition):
    normalised, problems = validate_workflow_def(definition, DEFS, {})
    for problem in problems:
        assert isinstance(problem, str) and ":" in problem and len(problem) > 10
    if not problems:
        assert normalised["tasks"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definitions(), st.integers(0, 10), st.data())
def test_valid_definitions_reach_a_terminal_state_under_random_outcomes(definition, x, data):
    _, problems = validate_workflow_def(definition, DEFS, {})
    assert problems == []
    sim = Sim(definition, DEFS)
    sim.start({"x": x})

    def random_worker(task: m.TaskState):
        status = data.draw(WORKER_OUTCOMES)
        return (status, {"ok": True}) if status == ss.TASK_COMPLETED else (status, "random failure")

    final = sim.run(random_worker, max_steps=2000)
    assert final.status in ss.TERMINAL_WORKFLOW, sim.statuses()
    if final.status == ss.COMPLETED:
        assert not [t for t in final.tasks if t.runtime.status in ss.ACTIVE_TASK]

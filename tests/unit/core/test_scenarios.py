"""The decider's scenarios as data (scenarios/*.yaml), each run in the simulator (tests/sim.py).

A scenario is a definition, the steps that move a workflow of it (run it with workers that
complete or fail given tasks, decide once, signal a waiting task, give an operator's command)
and, between them, what must hold then (`expect`). Like etcd's raft testdata: a new case of the
language is a new file, read as it runs. The task definitions a, b, c, book, cancel, charge and
refund are registered (retryCount 0); the workflow's id is `wf`. The steps and checks:

    run: {fail: [keys], status: FAILED}    workers complete every task but those (which fail)
    decide: wf                             one decision of that workflow
    signal: {task: key, output: {}, status: COMPLETED}   a WAIT or HUMAN ends
    command: {op: skip, key: y, status: RUNNING}         what the operate script queues
    expect:
      status, reason, output, variables    of the workflow, exactly
      reason_contains                      a fragment of its reason
      tasks                                every task's status, in the order they were created
      status_of, input_of, output_of       of the tasks named
      absent                               tasks that were never created
      executions, attempts                 the keys (and attempts) workers ran, in order
      decisions                            how many decisions were made
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sim import Handler, Sim, echo, task_defs

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.yaml"))
TASK_DEFS = ("a", "b", "c", "book", "cancel", "charge", "refund")


def workers(spec: dict[str, Any] | None) -> Handler:
    """Workers that complete every task with its input echoed, but fail those in `fail`."""
    spec = spec or {}
    failing, status = set(spec.get("fail", ())), spec.get("status", "FAILED")

    def handler(task: Any) -> Any:
        return (status, f"{task.spec.key} broke") if task.spec.key in failing else echo(task)
    return handler


def check(sim: Sim, expected: dict[str, Any], where: str) -> None:
    wf = sim.workflows["wf"]
    actual: dict[str, Any] = {
        "status": wf.status, "reason": wf.reason, "output": wf.output, "variables": wf.variables,
        "tasks": list(sim.statuses().items()), "decisions": sim.decisions,
        "executions": [key for _, key, _ in sim.executions], "attempts": [a for _, _, a in sim.executions]}
    for field, value in expected.items():
        if field == "tasks":
            assert actual["tasks"] == list(value.items()), where
        elif field in actual:
            assert actual[field] == value, f"{where}: {field}"
        elif field == "reason_contains":
            assert value in wf.reason, f"{where}: reason {wf.reason!r}"
        elif field == "absent":
            assert not set(value) & set(sim.statuses()), f"{where}: absent"
        elif field in ("status_of", "input_of", "output_of"):
            read = {"status_of": lambda t: t.runtime.status, "input_of": lambda t: t.spec.input,
                    "output_of": lambda t: t.output}[field]
            assert {key: read(sim.task(key)) for key in value} == value, f"{where}: {field}"
        else:
            raise AssertionError(f"{where}: unknown expectation '{field}'")


def play(scenario: dict[str, Any]) -> None:
    defs = task_defs(*TASK_DEFS, retryCount=0)
    sim = Sim(scenario["definition"], defs)
    sim.start(scenario.get("input"))
    for index, step in enumerate(scenario["steps"]):
        [(action, arg)] = step.items()
        where = f"step {index + 1} ({action})"
        if action == "run":
            sim.run(workers(arg))
        elif action == "decide":
            sim.decide(arg)
        elif action == "signal":
            sim.signal(arg["task"], arg.get("output", {}), status=arg.get("status", "COMPLETED"))
        elif action == "command":
            sim.command(**arg)
        elif action == "expect":
            check(sim, arg, where)
        else:
            raise AssertionError(f"{where}: unknown step")


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda path: path.stem)
def test_scenario(path: Path) -> None:
    play(yaml.safe_load(path.read_text()))


def test_there_are_scenarios() -> None:
    assert len(SCENARIOS) >= 5

"""Every decision the simulator makes in these tests is also made from the same workflow read
afresh, and the two must be equal.

A decision of a workflow the decider saw before reads what it knew of it (core/decider/instances.py:
the instances and what expressions see of them, carried from state to state, and the task lists
found finished, which it does not walk again). That knowledge must never change a decision: here
each of the language's tests checks so, on every step it takes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

import sim
from orchestrator.core.decider import Decision, decide


def _decide_checked(self: sim.Sim, workflow_id: str) -> Decision:
    wf = self.workflows[workflow_id]
    ids: list[str] = []

    def new_id() -> str:
        ids.append(next(self.ids))
        return ids[-1]
    decision = decide(wf, self.now, new_id)
    same_ids = iter(ids)
    afresh = decide(replace(wf), self.now, lambda: next(same_ids, "?"))   # `replace` keeps no index
    assert decision == afresh, f"workflow {workflow_id}: what was known of it changed its decision"
    self.decisions += 1
    self.apply(wf, decision)
    return decision


@pytest.fixture(autouse=True)
def decisions_as_if_read_afresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sim.Sim, "decide", _decide_checked)
    yield

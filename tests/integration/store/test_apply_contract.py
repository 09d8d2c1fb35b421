"""The Lua APPLY_DECISION and STEP scripts are held to the core's pure `apply`, on a real Redis.

Each scenario runs real workflows: the decider decides from what Redis holds, the
decision is applied by the script, and the result must equal what `apply` says of the
same state and decision, field by field, along with the effects on queues, leases,
child workflows and the decide set. Worker results and operator commands go through
their own scripts in between, so the states compared are the ones production sees.
Each scenario runs twice: with each result stored by COMPLETE_TASK (held to the pure
`with_result`) and decided afterwards, and with each result stored and decided in one STEP
(held to `apply(with_result(...))`), as the nodes do.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from helpers_layouts import StoreLayout
from orchestrator.core import state as m
from orchestrator.core import statuses as st
from orchestrator.core.apply import Effects, apply, apply_handing_over, with_result
from orchestrator.core.decider import Decision, decide
from orchestrator.core.definitions import normalise_task_def, normalise_workflow_def
from orchestrator.core.schema import Snapshot, WorkflowDef
from orchestrator.store import ApplyResult, ResultOutcome, WorkerResult
from orchestrator.store.redis import RedisStore

NOW = 1_800_000_000_000
EPOCH = 7
WorkerOutcome = Callable[[m.TaskSpec], tuple[st.TaskStatus, str, str]]


def comparable(state: m.WorkflowState) -> dict[str, Any]:
    return {
        "status": state.status, "output": state.output, "reason": state.reason, "ended": state.ended_at_ms,
        "updated": state.updated_at_ms, "revision": state.revision, "variables": state.variables,
        "version": state.version, "definition": state.definition, "commands": state.commands, "depth": state.depth,
        "tasks": [(t.spec.to_json(), t.runtime.to_json(), t.output) for t in state.tasks],
    }


class Contract:
    """Drives workflows through the store and checks every applied decision against `apply`."""

    def __init__(self, store: RedisStore, worker: WorkerOutcome, *, stepping: bool = False) -> None:
        self.store = store
        self.worker = worker
        self.stepping = stepping   # each result stored and decided in one STEP, not COMPLETE_TASK then a decision
        self.ids = (f"t{n}" for n in itertools.count())
        self.now = NOW
        self.checked = 0
        self.published: list[tuple[str, str]] = []

    async def check_one(self, workflow_id: str) -> Decision | None:
        before = await self.store.load(workflow_id)
        assert before is not None
        decision = decide(before, self.now, lambda: next(self.ids))
        if decision.empty and decision.wake_at_ms is None:
            return None
        expected, effects = apply(before, decision, self.now)
        [outcome] = await self.store.apply_decisions(EPOCH, self.now, [(before, decision)])
        assert outcome.result is ApplyResult.OK
        after = await self.store.load(workflow_id)
        assert after is not None
        assert comparable(after) == comparable(expected)
        await self.check_effects(workflow_id, effects)
        self.checked += 1
        return decision

    async def check_effects(self, workflow_id: str, effects: Effects) -> None:
        redis, keys = self.store._redis, self.store.keys
        p = keys.partition_of(workflow_id)
        for task_type, task_id in effects.enqueue:
            assert await redis.zscore(keys.queue(p, task_type), f"{workflow_id}|{task_id}") is not None
        for task_type, task_id in effects.dequeue:
            assert await redis.zscore(keys.queue(p, task_type), f"{workflow_id}|{task_id}") is None
        for _, task_id in effects.drop_leases:
            assert await redis.zscore(keys.leases(p), f"{workflow_id}|{task_id}") is None
        for child in effects.start:
            stored = await self.store.load(child.workflow_id)
            assert stored is not None and stored.parent == child.parent and stored.input == child.input
            assert stored.depth == child.depth == 1
        for other, _ in effects.terminate:
            stored = await self.store.load(other)
            assert stored is not None and stored.status in st.TERMINAL_WORKFLOW
        wake = await redis.zscore(keys.decide(keys.partition_of(workflow_id)), workflow_id)
        if effects.wake_at_ms is None:
            assert wake is None or wake <= self.now   # only an event (already due) can be pending
        else:
            assert wake is not None and wake <= effects.wake_at_ms
        if wake is not None:   # a decision removes the reminder only when `due` says there may be one
            assert await redis.hget(keys.workflow(workflow_id), "due") == "1"
        if effects.ended:
            assert (await self.store.ended_counts([workflow_id]))[workflow_id] == 1
        for topic, payload in effects.publish:   # appended in the same step: the newest entry of its topic
            [(_, fields)] = await redis.xrevrange(keys.events(topic), count=1)
            assert fields["p"] == payload
            self.published.append((topic, payload))

    async def run(self, root: str, max_rounds: int = 60) -> m.WorkflowState:
        for _ in range(max_rounds):
            due = (await self.store.due(self.now, 100)).workflows
            for workflow_id in due:
                await self.check_one(workflow_id)
            worked = await self.work()
            state = await self.store.load(root)
            assert state is not None
            if state.status in st.TERMINAL_WORKFLOW and not due and not worked:
                return state
            if not due and not worked:
                self.now += 1000   # let delays and back-offs fall due
        raise AssertionError(f"{root} did not end: {await self.store.load(root)}")

    async def work(self) -> bool:
        worked = False
        for task_type in ("fetch", "charge", "refund", "flaky"):
            for claimed in await self.store.claim(task_type, 10, "w1", self.now):
                await self.finish(claimed.workflow_id, claimed.spec)
                worked = True
        return worked

    async def finish(self, workflow_id: str, spec: m.TaskSpec) -> None:
        """The worker's result for `spec`, stored the way this contract runs (and checked)."""
        status, output, reason = self.worker(spec)
        before = await self.store.load(workflow_id)
        assert before is not None
        stored = with_result(before, spec.task_id, status, json.loads(output), reason, self.now)
        if not self.stepping:
            ack = await self.store.complete_task(workflow_id, spec.task_id, "w1", status, output, reason, self.now)
            assert ack.outcome is ResultOutcome.STORED
            after = await self.store.load(workflow_id)
            assert after is not None and comparable(after) == comparable(stored)
            return
        decision = decide(stored, self.now, lambda: next(self.ids))
        expected, effects = apply(stored, decision, self.now)
        stepped = await self.store.step(WorkerResult(workflow_id, spec.task_id, "w1", status, output, reason),
                                        stored, decision, self.now)
        assert stepped.ack.outcome is ResultOutcome.STORED
        assert stepped.applied is not None and stepped.applied.result is ApplyResult.OK
        after = await self.store.load(workflow_id)
        assert after is not None and comparable(after) == comparable(expected)
        await self.check_effects(workflow_id, effects)
        self.checked += 1


TASK_DEFS = {name: normalise_task_def({"name": name, "retryCount": 1, "retryDelaySeconds": 1})
             for name in ("fetch", "charge", "refund", "flaky")}


def definition(raw: dict[str, Any], others: dict[str, WorkflowDef] | None = None) -> WorkflowDef:
    return normalise_workflow_def({"name": "flow", **raw}, TASK_DEFS, others or {})


def all_complete(spec: m.TaskSpec) -> tuple[st.TaskStatus, str, str]:
    return st.TASK_COMPLETED, '{"ok": true, "n": 2}', ""


def flaky_first_then_charge_fails(spec: m.TaskSpec) -> tuple[st.TaskStatus, str, str]:
    if spec.task_type == "flaky" and spec.attempt == 0:
        return st.TASK_FAILED, "{}", "flaked"
    if spec.task_type == "charge":
        return st.FAILED_WITH_TERMINAL_ERROR, "{}", "card declined"
    return st.TASK_COMPLETED, '{"booking": "b-1"}', ""


CHILD = definition({"name": "child", "tasks": [{"name": "fetch", "taskReferenceName": "c1"}],
                    "outputParameters": {"got": "${c1.output.ok}"}})

SCENARIOS: dict[str, tuple[WorkflowDef, WorkerOutcome]] = {
    "sequence, fork/join, switch, loop, variables, sub-workflow": (definition({
        "tasks": [
            {"name": "fetch", "taskReferenceName": "a"},
            {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
             "forkTasks": [[{"name": "fetch", "taskReferenceName": "b1"}],
                           [{"name": "fetch", "taskReferenceName": "b2"}]]},
            {"name": "join", "taskReferenceName": "join", "type": "JOIN"},
            {"name": "vars", "taskReferenceName": "vars", "type": "SET_VARIABLE",
             "inputParameters": {"seen": "${a.output.n}"}},
            {"name": "route", "taskReferenceName": "route", "type": "SWITCH", "evaluatorType": "expression",
             "expression": "$.n > 1 ? 'big' : 'small'", "inputParameters": {"n": "${a.output.n}"},
             "decisionCases": {"big": [{"name": "fetch", "taskReferenceName": "big"}]}},
            {"name": "loop", "taskReferenceName": "loop", "type": "DO_WHILE", "items": [1, 2],
             "loopOver": [{"name": "fetch", "taskReferenceName": "each"}]},
            {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
             "subWorkflowParam": {"name": "child", "version": 1}},
        ],
        "outputParameters": {"child": "${sub.output.got}", "seen": "${workflow.variables.seen}"},
    }, {"child": CHILD}), all_complete),
    "an EVENT task publishes in the decision that completes it": (definition({
        "tasks": [
            {"name": "fetch", "taskReferenceName": "a"},
            {"name": "announce", "taskReferenceName": "announce", "type": "EVENT", "sink": "conductor:orders.paid",
             "inputParameters": {"order": "A-1", "amount": "${a.output.n}"}},
            {"name": "fetch", "taskReferenceName": "b"},
        ],
    }), all_complete),
    "retry after a failure, then a saga compensates": (definition({
        "tasks": [
            {"name": "flaky", "taskReferenceName": "book",
             "compensation": {"name": "refund", "inputParameters": {"booking": "${book.output.booking}"}}},
            {"name": "charge", "taskReferenceName": "pay"},
        ],
    }), flaky_first_then_charge_fails),
}


@pytest.mark.parametrize("stepping", [False, True], ids=["complete-then-decide", "step"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_lua_script_applies_decisions_as_the_pure_apply_says(layout: StoreLayout, name: str,
                                                                  stepping: bool) -> None:
    definition_doc, worker = SCENARIOS[name]

    async def scenario() -> None:
        store = layout.store(f"ac{uuid.uuid4().hex[:8]}")
        try:
            await store.raise_epoch(EPOCH)
            contract = Contract(store, worker, stepping=stepping)
            snapshot: Snapshot = {"workflow": definition_doc, "taskDefs": TASK_DEFS, "subWorkflows": {"child:1": CHILD}}
            await store.start_workflow("root", snapshot, {"n": 2}, "", "", NOW)
            final = await contract.run("root")
            assert contract.checked >= (3 if name.startswith("an EVENT task") else 5)
            if name.startswith("an EVENT task"):
                assert final.status == st.COMPLETED
                assert contract.published == [("orders.paid", '{"order":"A-1","amount":2}')]
                assert await store._redis.xlen(store.keys.events("orders.paid")) == 1   # once, not per decision
            elif name.startswith("sequence"):
                assert final.status == st.COMPLETED and final.output == {"child": True, "seen": 2}
            else:
                assert final.status == st.COMPENSATED and "card declined" in final.reason
        finally:
            await store.close()

    asyncio.run(scenario())


def test_operator_commands_and_termination_apply_as_the_pure_apply_says(layout: StoreLayout) -> None:
    """A restart (command consumed, tasks deleted, result reset) and a terminated parent
    (its child terminated in the same step) are held to the contract too."""

    async def scenario() -> None:
        store = layout.store(f"ac{uuid.uuid4().hex[:8]}")
        try:
            await store.raise_epoch(EPOCH)
            contract = Contract(store, all_complete)
            flow = definition({"tasks": [{"name": "fetch", "taskReferenceName": "a"},
                                         {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
                                          "subWorkflowParam": {"name": "child", "version": 1}}]},
                              {"child": CHILD})
            snapshot: Snapshot = {"workflow": flow, "taskDefs": TASK_DEFS, "subWorkflows": {"child:1": CHILD}}
            await store.start_workflow("root", snapshot, {}, "", "", NOW)
            assert (await contract.run("root")).status == st.COMPLETED
            await store.operate("root", allowed=[st.COMPLETED], new_status=st.RUNNING, command={"op": "restart"},
                                now_ms=contract.now)
            restarted = await contract.check_one("root")
            assert restarted is not None and restarted.reset_result and restarted.delete_tasks
            await contract.work()
            await contract.check_one("root")   # schedules the sub-workflow again
            await store.terminate("root", "enough", contract.now)
            terminated = await contract.check_one("root")
            assert terminated is not None and terminated.terminate_workflows
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_step_after_another_event_stores_the_result_and_leaves_the_decision_to_be_made_again(
        layout: StoreLayout) -> None:
    """Two branches end at once: the step of the second, decided from the workflow before the first's
    result, is a conflict. Its result is stored as COMPLETE_TASK stores it (with its decide reminder),
    its decision is not applied; the same step again is a duplicate and changes nothing."""

    async def scenario() -> None:
        store = layout.store(f"ac{uuid.uuid4().hex[:8]}")
        try:
            contract = Contract(store, all_complete, stepping=True)
            flow = definition({"tasks": [
                {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
                 "forkTasks": [[{"name": "fetch", "taskReferenceName": "b1"}],
                               [{"name": "fetch", "taskReferenceName": "b2"}]]},
                {"name": "join", "taskReferenceName": "join", "type": "JOIN"}]})
            await store.start_workflow("root", {"workflow": flow, "taskDefs": TASK_DEFS, "subWorkflows": {}}, {},
                                       "", "", NOW)
            await contract.check_one("root")
            first, second = await store.claim("fetch", 10, "w1", NOW)
            before = await store.load("root")
            assert before is not None
            stored = with_result(before, second.spec.task_id, st.TASK_COMPLETED, {"ok": True}, "", NOW)
            decision = decide(stored, NOW, lambda: next(contract.ids))
            await contract.finish("root", first.spec)   # the other branch's result comes first
            meanwhile = await store.load("root")
            assert meanwhile is not None
            result = WorkerResult("root", second.spec.task_id, "w1", st.TASK_COMPLETED, '{"ok": true}')
            stepped = await store.step(result, stored, decision, NOW)
            assert stepped.ack.outcome is ResultOutcome.STORED
            assert stepped.applied is not None and stepped.applied.result is ApplyResult.CONFLICT
            after = await store.load("root")
            assert after is not None   # the result as COMPLETE_TASK stores it, and nothing of the decision
            assert comparable(after) == comparable(with_result(meanwhile, second.spec.task_id, st.TASK_COMPLETED,
                                                               {"ok": True}, "", NOW))
            assert await store._redis.zscore(store.keys.decide(store.keys.partition_of("root")),
                                             "root") is not None, "no reminder left"
            again = await store.step(result, stored, decision, NOW)
            assert again.ack.outcome is ResultOutcome.DUPLICATE and again.applied is None
            assert (await store.load("root")).revision == after.revision   # type: ignore[union-attr]
        finally:
            await store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("hand_over", [False, True], ids=["queued", "handed-over"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_start_applies_its_first_decision_as_the_pure_apply_says(layout: StoreLayout, name: str,
                                                                   hand_over: bool) -> None:
    """START_WORKFLOW with the first decision: the record it leaves is apply(the workflow as created, the
    decision), field for field, with the decision's effects and no decide reminder (nothing is left to
    decide); a task the decision hands to the caller's worker is that worker's, leased, not queued."""
    definition_doc, _ = SCENARIOS[name]
    forked = definition({"name": "forked", "tasks": [
        {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
         "forkTasks": [[{"name": "fetch", "taskReferenceName": "b1"}],
                       [{"name": "charge", "taskReferenceName": "b2"}]]},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN"}]})

    async def scenario() -> None:
        store = layout.store(f"ac{uuid.uuid4().hex[:8]}")
        try:
            contract = Contract(store, all_complete)
            for task_def in TASK_DEFS.values():
                await store.put_task_def(task_def)
            for workflow_def in (CHILD, definition_doc, forked):
                await store.put_workflow_def(workflow_def)
            made: list[tuple[m.WorkflowState, Decision, dict[str, str]]] = []

            async def first(state: m.WorkflowState) -> tuple[Decision, dict[str, str]]:
                decision = decide(state, NOW, lambda: next(contract.ids))
                served = {decision.enqueue[0][1]: "w1"} if hand_over else {}
                made.append((state, decision, served))
                return decision, served

            for workflow_id, flow in (("root", definition_doc["name"]), ("fork", "forked")):
                made.clear()
                started = await store.start_by_name(flow, 0, workflow_id, {"n": 2}, "", "", NOW, decide=first)
                [(created, decision, served)] = made
                assert started.created and started.state == created and started.decision is decision
                assert started.applied is not None and started.applied.result is ApplyResult.OK
                expected, effects = apply(created, decision, NOW)
                after = await store.load(workflow_id)
                assert after is not None
                p = store.keys.partition_of(workflow_id)
                assert await store._redis.zscore(store.keys.decide(p), workflow_id) is None, "a reminder was left"
                assert await store._redis.hget(store.keys.workflow(workflow_id), "due") == "0"
                handed = {task.spec.task_id: task for task in started.applied.handed}
                assert set(handed) == set(served)
                for task_id in served:   # the worker's already: leased, out of its queue
                    task = after.task(task_id)
                    assert task is not None and task.runtime.status == st.IN_PROGRESS
                    assert task.runtime.worker_id == "w1" and handed[task_id].spec == task.spec
                    assert await store._redis.zscore(store.keys.leases(p), f"{workflow_id}|{task_id}") is not None
                    assert await store._redis.zscore(store.keys.queue(p, task.spec.task_type),
                                                     f"{workflow_id}|{task_id}") is None
                    expected = replace(expected, tasks=[t if t.task_id != task_id else task for t in expected.tasks])
                effects = replace(effects, enqueue=[(t, i) for t, i in effects.enqueue if i not in served])
                assert comparable(after) == comparable(expected)
                # and what a node's state cache makes of the same write (cluster/state_cache.py)
                assert comparable(after) == comparable(apply_handing_over(created, decision, NOW, served))
                await contract.check_effects(workflow_id, effects)
        finally:
            await store.close()

    asyncio.run(scenario())

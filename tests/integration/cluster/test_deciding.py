"""Every node decides: concurrent deciders on one workflow, and the leader's sweep of events
whose node never decided them. Real Redis, real Lua; a real node where the sweep is tested."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from orchestrator.cluster.deciding import Decider
from orchestrator.core import statuses as st
from orchestrator.core.definitions import normalise_task_def, normalise_workflow_def
from orchestrator.store import ClaimedTask, ResultOutcome, WorkerResult
from orchestrator.store.redis import RedisStore

NOW_TASKS = ("a", "b", "c")


def sequence_snapshot() -> Any:
    task_def = normalise_task_def({"name": "step", "retryDelaySeconds": 0})
    definition = normalise_workflow_def({"name": "race", "tasks": [
        {"name": "step", "taskReferenceName": ref} for ref in NOW_TASKS]}, {"step": task_def})
    return {"workflow": definition, "taskDefs": {"step": task_def}, "subWorkflows": {}}


def test_two_nodes_deciding_the_same_workflows_never_apply_twice(redis_server: Any) -> None:
    """Thousands of races: two deciders (two connections, as two nodes) decide the same 300
    workflows at the same moment, step after step. Exactly one decision per change applies;
    the other sees a conflict, reloads, and finds nothing left to do."""
    prefix = f"race{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[int, int]:
        one, two = RedisStore.from_url(redis_server.url, prefix), RedisStore.from_url(redis_server.url, prefix)
        try:
            ids = [f"wf{i}" for i in range(300)]
            snapshot = sequence_snapshot()
            for workflow_id in ids:
                await one.start_workflow(workflow_id, snapshot, {}, "", "", int(time.time() * 1000))
            first, second = Decider(one), Decider(two)
            races = 0
            for _ in range(len(NOW_TASKS) + 1):
                await asyncio.gather(first.decide(ids), second.decide(ids))
                races += len(ids)
                for claimed in await one.claim("step", 1000, "w", int(time.time() * 1000)):
                    await one.complete_task(claimed.workflow_id, claimed.spec.task_id, "w", st.TASK_COMPLETED,
                                            "{}", "", int(time.time() * 1000))
            await asyncio.gather(first.decide(ids), second.decide(ids))
            states = await one.load_many(ids)
            for state in states:
                assert state is not None and state.status == st.COMPLETED
                assert [t.spec.ref for t in state.tasks] == list(NOW_TASKS)   # each step scheduled once
            ended = await one.ended_counts(ids)
            assert set(ended.values()) == {1} and len(ended) == len(ids)   # each completed exactly once
            return races, first.decisions + second.decisions
        finally:
            await one.close()
            await two.close()

    races, applied = asyncio.run(scenario())
    assert races >= 1200
    # 300 workflows x (3 schedules + 1 completion) changes, each applied by exactly one decider
    assert applied == 300 * (len(NOW_TASKS) + 1)


def test_an_event_whose_node_never_decided_it_is_swept_by_the_leader(node: Any) -> None:
    """A result stored by a node that died before deciding it (here: stored straight into the
    store, as that node would have) is decided by the leader's sweep shortly after."""
    client = node.client
    name, task_name = f"swept_{uuid.uuid4().hex[:6]}", f"swept_task_{uuid.uuid4().hex[:6]}"
    client.register_task_def({"name": task_name})
    client.register_workflow_def({"name": name, "tasks": [
        {"name": task_name, "taskReferenceName": "one"}, {"name": task_name, "taskReferenceName": "two"}]})
    workflow_id = client.start_workflow(name, {})

    async def store_result_without_deciding() -> str:
        store = RedisStore.from_url(node.redis_url, f"wfo:{node.cluster}")
        try:
            deadline = time.monotonic() + 10
            while not (claimed := await store.claim(task_name, 1, "ghost", int(time.time() * 1000))):
                assert time.monotonic() < deadline, "the start was not decided by the node that stored it"
                await asyncio.sleep(0.02)
            [task] = claimed
            await store.complete_task(workflow_id, task.spec.task_id, "ghost", st.TASK_COMPLETED, '{"by": "ghost"}',
                                      "", int(time.time() * 1000))
            return task.spec.ref
        finally:
            await store.close()

    assert asyncio.run(store_result_without_deciding()) == "one"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tasks = client.get_workflow(workflow_id)["tasks"]
        if any(t["reference_name"] == "two" for t in tasks):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the sweep never decided the stored result: {tasks}")


class Handed:
    """This test's worker "w", as the deciders see their node's workers: every task a decision queues is
    handed to it in the same write (as the dispatcher does for a worker with credit)."""

    def __init__(self) -> None:
        self.tasks: list[ClaimedTask] = []

    def reserve(self, task_type: str) -> str | None:
        return "w"

    def deliver(self, worker_id: str, task: ClaimedTask) -> None:
        self.tasks.append(task)

    def unreserve(self, worker_id: str, count: int) -> None:
        pass

    def take(self, ref: str) -> list[ClaimedTask]:
        taken = [task for task in self.tasks if task.spec.ref == ref]
        self.tasks = [task for task in self.tasks if task.spec.ref != ref]
        return taken


def fork_snapshot() -> Any:
    task_def = normalise_task_def({"name": "step", "retryDelaySeconds": 0})
    definition = normalise_workflow_def({"name": "fork", "tasks": [
        {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
         "forkTasks": [[{"name": "step", "taskReferenceName": "b1"}], [{"name": "step", "taskReferenceName": "b2"}]]},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN"},
        {"name": "step", "taskReferenceName": "c"}]}, {"step": task_def})
    return {"workflow": definition, "taskDefs": {"step": task_def}, "subWorkflows": {}}


def test_results_decided_from_memory_and_from_a_stale_memory_end_the_same(redis_server: Any) -> None:
    """A result is stored and decided in one step from what the deciding node remembers of the
    workflow (its own last write), without reloading it. Here the branches of a fork end on two
    nodes: the second branch's result comes to a node whose memory the other branch's result made
    stale, which costs a conflict and a reload, never a wrong write; the step after the join is
    decided from memory again. Every workflow completes, each task scheduled once, ended once."""
    prefix = f"memo{uuid.uuid4().hex[:8]}"
    ids = [f"wf{i}" for i in range(50)]

    def done(task: ClaimedTask) -> WorkerResult:
        return WorkerResult(task.workflow_id, task.spec.task_id, "w", st.TASK_COMPLETED, '{"ok": true}')

    async def scenario() -> tuple[Decider, Decider]:
        one, two = RedisStore.from_url(redis_server.url, prefix), RedisStore.from_url(redis_server.url, prefix)
        handed = Handed()
        first, second = Decider(one, hand_over=handed), Decider(two, hand_over=handed)
        try:
            for workflow_id in ids:
                await one.start_workflow(workflow_id, fork_snapshot(), {}, "", "", int(time.time() * 1000))
            await first.decide(ids)   # both branches handed over; the first remembers its writes
            for task in handed.take("b1"):   # the other node ends the first branches
                assert (await second.step(done(task))).outcome is ResultOutcome.STORED
            for task in handed.take("b2"):   # this node's memory of each is stale now
                assert (await first.step(done(task))).outcome is ResultOutcome.STORED
            await first.settled()   # the conflicts' decisions ran (the join, then `c` handed over)
            assert first.conflicts == len(ids)
            for task in handed.take("c"):
                assert (await first.step(done(task))).outcome is ResultOutcome.STORED
            assert first.conflicts == len(ids), "a decision from a fresh memory was refused"
            states = await one.load_many(ids)
            for state in states:
                assert state is not None and state.status == st.COMPLETED, state
                assert sorted(t.spec.ref for t in state.tasks) == ["b1", "b2", "c", "fork", "join"]
            ended = await one.ended_counts(ids)
            assert set(ended.values()) == {1} and len(ended) == len(ids)
            return first, second
        finally:
            await first.stop()
            await second.stop()
            await one.close()
            await two.close()

    first, second = asyncio.run(scenario())
    assert first.cache.hits >= 2 * len(ids), "the deciding node reloaded workflows it had just written"
    assert second.cache.hits == 0 and second.conflicts == 0


def test_results_of_one_workflow_that_come_together_are_decided_together(redis_server: Any) -> None:
    """Twenty branches of a fork end at once on one node: one of their results is stepped, the others
    are stored and decided in one batch, not each stepped against a workflow the others keep changing
    (a conflict each, and a decision of the whole workflow each). All complete; the join follows."""
    prefix = f"fanin{uuid.uuid4().hex[:8]}"
    refs = [f"b{i}" for i in range(20)]
    task_def = normalise_task_def({"name": "step", "retryDelaySeconds": 0})
    definition = normalise_workflow_def({"name": "fan", "tasks": [
        {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
         "forkTasks": [[{"name": "step", "taskReferenceName": ref}] for ref in refs]},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN"},
        {"name": "step", "taskReferenceName": "c"}]}, {"step": task_def})

    async def scenario() -> Decider:
        store = RedisStore.from_url(redis_server.url, prefix)
        handed = Handed()
        decider = Decider(store, hand_over=handed)
        try:
            await store.start_workflow("fan", {"workflow": definition, "taskDefs": {"step": task_def},
                                               "subWorkflows": {}}, {}, "", "", int(time.time() * 1000))
            await decider.decide(["fan"])
            branches = [task for ref in refs for task in handed.take(ref)]
            assert len(branches) == len(refs)
            acks = await asyncio.gather(*(decider.step(WorkerResult(
                task.workflow_id, task.spec.task_id, "w", st.TASK_COMPLETED, "{}")) for task in branches))
            assert {ack.outcome for ack in acks} == {ResultOutcome.STORED}
            await decider.settled()
            [last] = handed.take("c")
            assert (await decider.step(WorkerResult("fan", last.spec.task_id, "w", st.TASK_COMPLETED,
                                                    "{}"))).outcome is ResultOutcome.STORED
            state = await store.load("fan")
            assert state is not None and state.status == st.COMPLETED
            return decider
        finally:
            await decider.stop()
            await store.close()

    decider = asyncio.run(scenario())
    assert decider.conflicts <= 1, f"{decider.conflicts} results were stepped against each other"

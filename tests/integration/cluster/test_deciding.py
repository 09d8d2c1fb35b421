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

"""The Lua transitions against a real Redis: fencing, conditional writes, idempotency, atomic claims."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from orchestrator.core import statuses as st
from orchestrator.core.definitions import normalise_task_def, normalise_workflow_def
from orchestrator.core.decider import decide
from orchestrator.core.errors import StaleEpoch
from orchestrator.core.schema import Snapshot
from orchestrator.cluster.deciding import Decider, new_task_id
from orchestrator.cluster.leader_loop import LeaderLoop, LeadershipLost
from orchestrator.core.apply import with_result
from orchestrator.store import ApplyResult, ResultAck, ResultOutcome, WorkerResult
from orchestrator.store.redis import RedisStore as Store

NOW = 1_700_000_000_000


@pytest.fixture
def store(layout):
    return layout.store(f"st{uuid.uuid4().hex[:8]}")


def run(coro):
    return asyncio.run(coro)


async def started_workflow(store: Store, task_name: str = "fetch", beside: str = "", **task_fields) -> str:
    """A workflow of one task started (undecided); `beside`: one in that workflow's partition."""
    task_def = normalise_task_def({"name": task_name, "retryDelaySeconds": 0, **task_fields})
    definition = normalise_workflow_def({"name": "w", "tasks": [
        {"name": task_name, "taskReferenceName": "a"}]}, {task_name: task_def})
    workflow_id = store.new_workflow_id_beside(beside) if beside else uuid.uuid4().hex
    snapshot: Snapshot = {"workflow": definition, "taskDefs": {task_name: task_def}, "subWorkflows": {}}
    await store.start_workflow(workflow_id, snapshot, {}, "", "", NOW)
    return workflow_id


async def decide_once(store: Store, epoch: int | None, workflow_id: str, now: int = NOW) -> list[ApplyResult]:
    state = await store.load(workflow_id)
    assert state is not None
    outcomes = await store.apply_decisions(epoch, now, [(state, decide(state, now, new_task_id))])
    return [o.result for o in outcomes]


def test_stale_epoch_writes_are_refused_and_change_nothing(store):
    async def scenario():
        try:
            workflow_id = await started_workflow(store)
            await store.raise_epoch(10)
            await store.raise_epoch(12)               # a newer leader took over
            with pytest.raises(StaleEpoch):
                await store.raise_epoch(11)
            before = await store._redis.hgetall(store.keys.workflow(workflow_id))
            with pytest.raises(StaleEpoch):
                await decide_once(store, 10, workflow_id)
            assert await store._redis.hgetall(store.keys.workflow(workflow_id)) == before
            assert await store._redis.zcard(store.keys.queue(store.keys.partition_of(workflow_id), "fetch")) == 0
            assert await decide_once(store, 12, workflow_id) == [ApplyResult.OK]
            assert await store._redis.zcard(store.keys.queue(store.keys.partition_of(workflow_id), "fetch")) == 1
        finally:
            await store.close()
    run(scenario())


def test_stale_leader_loop_steps_down_instead_of_writing(store):
    async def scenario():
        try:
            workflow_id = await started_workflow(store)
            await store.raise_epoch(20)
            loop = LeaderLoop(store, Decider(store), epoch=19, still_leader=lambda: True)
            with pytest.raises(LeadershipLost, match="newer than this node's term 19"):
                await loop.run()
            state = await store.load(workflow_id)
            assert state.tasks == [] and loop.decisions == 0
            deposed = LeaderLoop(store, Decider(store), epoch=21, still_leader=lambda: False)
            with pytest.raises(LeadershipLost, match="deadline"):
                await deposed.run()
        finally:
            await store.close()
    run(scenario())


def test_decision_on_a_changed_workflow_is_a_conflict(store):
    async def scenario():
        try:
            workflow_id = await started_workflow(store)
            await store.raise_epoch(1)
            stale_read = await store.load(workflow_id)
            assert await decide_once(store, 1, workflow_id) == [ApplyResult.OK]
            outcome = await store.apply_decisions(1, NOW, [(stale_read, decide(stale_read, NOW, new_task_id))])
            assert [o.result for o in outcome] == [ApplyResult.CONFLICT]
            assert len((await store.load(workflow_id)).tasks) == 1   # not scheduled twice
        finally:
            await store.close()
    run(scenario())


def test_results_are_idempotent_per_attempt_and_worker(store):
    async def scenario():
        try:
            workflow_id = await started_workflow(store)
            await store.raise_epoch(1)
            await decide_once(store, 1, workflow_id)
            [claimed] = await store.claim("fetch", 5, "worker-a", NOW)
            task_id = claimed.spec.task_id
            assert await store.heartbeat(workflow_id, task_id, "worker-b", NOW) == 0   # not its task
            assert await store.complete_task(workflow_id, task_id, "worker-b", st.TASK_COMPLETED, "{}", "", NOW) \
                == ResultAck(ResultOutcome.STALE, "held by another worker", "fetch")
            assert await store.complete_task(workflow_id, task_id, "worker-a", st.TASK_COMPLETED, '{"v": 1}', "",
                                             NOW) == ResultAck(ResultOutcome.STORED, "", "fetch")
            assert await store.complete_task(workflow_id, task_id, "worker-a", st.TASK_COMPLETED, '{"v": 2}', "",
                                             NOW) == ResultAck(ResultOutcome.DUPLICATE, "", "fetch")
            assert await store.complete_task(workflow_id, "nope", "worker-a", st.TASK_COMPLETED, "{}", "",
                                             NOW) == ResultAck(ResultOutcome.UNKNOWN)
            state = await store.load(workflow_id)
            assert state.tasks[0].output == {"v": 1}
        finally:
            await store.close()
    run(scenario())


def test_concurrent_claims_hand_each_task_to_exactly_one_worker(store):
    async def scenario():
        try:
            await store.raise_epoch(1)
            ids = [await started_workflow(store, "claimed") for _ in range(120)]
            for workflow_id in ids:
                await decide_once(store, 1, workflow_id)

            async def claimer(worker_id: str) -> list[str]:
                got: list[str] = []
                while True:
                    batch = await store.claim("claimed", 7, worker_id, NOW)
                    if not batch:
                        return got
                    got += [c.spec.task_id for c in batch]

            results = await asyncio.gather(*(claimer(f"w{i}") for i in range(4)))
            everything = [task_id for got in results for task_id in got]
            assert len(everything) == len(set(everything)) == 120
            async with store._redis.pipeline(transaction=False) as pipe:
                for p in store.keys.all_partitions():
                    pipe.zcard(store.keys.leases(p))
                assert sum(await pipe.execute()) == 120
        finally:
            await store.close()
    run(scenario())


async def _started_fork(store, name, refs):
    """A workflow of one FORK_JOIN of `recorded` tasks, one branch per ref, then its JOIN (undecided)."""
    task_def = normalise_task_def({"name": "recorded"})
    definition = normalise_workflow_def({"name": name, "tasks": [
        {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN", "forkTasks": [
            [{"name": "recorded", "taskReferenceName": ref}] for ref in refs]},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN", "joinOn": list(refs)}]},
        {"recorded": task_def})
    workflow_id = uuid.uuid4().hex
    await store.start_workflow(workflow_id, {"workflow": definition, "taskDefs": {"recorded": task_def},
                                             "subWorkflows": {}}, {"n": 1}, "", "", NOW)
    return workflow_id


def test_a_claim_answers_with_each_workflow_as_it_left_it(store):
    """With `records`, each claimed task comes with its workflow as the claim wrote it (the task in
    progress for the claiming worker, the revision moved on, a timeout's reminder): what a load
    right after the claim reads. Two tasks of one workflow share one record."""
    async def scenario():
        try:
            await store.raise_epoch(1)
            one = await started_workflow(store, "recorded", responseTimeoutSeconds=30)
            two = await _started_fork(store, "two", ["x", "y"])
            for workflow_id in (one, two):
                await decide_once(store, 1, workflow_id)
            claimed = await store.claim("recorded", 10, "worker-r", NOW + 5, records=True)
            assert sorted(c.workflow_id for c in claimed) == sorted([one, two, two])
            for task in claimed:
                loaded = await store.load(task.workflow_id)
                assert task.workflow is not None and loaded is not None
                assert task.workflow.revision == loaded.revision
                assert task.workflow.tasks == loaded.tasks
                assert task.workflow.stored_bytes == loaded.stored_bytes
                assert (task.workflow.status, task.workflow.variables, task.workflow.input) == \
                    (loaded.status, loaded.variables, loaded.input)
                mine = task.workflow.task(task.spec.task_id)
                assert mine is not None and mine.runtime.status == st.IN_PROGRESS
                assert mine.runtime.worker_id == "worker-r"
            assert len({id(c.workflow) for c in claimed if c.workflow_id == two}) == 1
        finally:
            await store.close()
    run(scenario())


def test_a_claim_leaves_out_the_record_of_a_large_workflow(store):
    """A fork of 300 branches has over 512 fields (two per task): a claim of its branches answers without its record
    (copying and parsing it on every claim cost more than the reload its next result makes), and a
    small workflow claimed in the same call still comes with its own."""
    async def scenario():
        try:
            await store.raise_epoch(1)
            small = await started_workflow(store, "recorded", responseTimeoutSeconds=30)
            wide = await _started_fork(store, "wide", [f"b{i}" for i in range(300)])
            for workflow_id in (small, wide):
                await decide_once(store, 1, workflow_id)
            claimed = await store.claim("recorded", 400, "worker-r", NOW + 5, records=True)
            assert sorted({c.workflow_id for c in claimed}) == sorted([small, wide])
            assert len(claimed) == 301
            assert all(c.workflow is None for c in claimed if c.workflow_id == wide)
            [mine] = [c for c in claimed if c.workflow_id == small]
            assert mine.workflow is not None and mine.workflow.revision == (await store.load(small)).revision
        finally:
            await store.close()
    run(scenario())


def test_the_step_ending_an_awaited_workflow_reads_back_a_small_record_only(store):
    """A step that ends a workflow a caller on this node waits for (ExecuteWorkflow) reads its record
    back in the same pipeline and holds it for that caller (`ended_state`), but only a record up to
    ENDED_ROW_MAX_BYTES: a caller that went away leaves its row behind. A larger one is loaded."""
    async def scenario():
        try:
            await store.raise_epoch(1)
            for output, held in (({"small": 1}, True), ({"big": "x" * 300_000}, False)):
                workflow_id = await started_workflow(store, "awaited")
                await decide_once(store, 1, workflow_id)
                await store.expect_end(workflow_id)
                [claimed] = await store.claim("awaited", 1, "worker-e", NOW + 5)
                output_json = json.dumps(output)
                state = await store.load(workflow_id)
                decided = with_result(state, claimed.spec.task_id, st.TASK_COMPLETED, output, "", NOW + 6,
                                      grows_by=len(output_json))
                decision = decide(decided, NOW + 6, new_task_id)
                assert decision.status == st.COMPLETED
                result = WorkerResult(workflow_id, claimed.spec.task_id, "worker-e", st.TASK_COMPLETED, output_json)
                stepped = await store.step(result, decided, decision, NOW + 6)
                assert stepped.ack.outcome is ResultOutcome.STORED
                assert stepped.applied is not None and stepped.applied.result is ApplyResult.OK
                found = await store.ended_state(workflow_id)
                assert (found is not None) is held, output.keys()
                if found is not None:
                    assert found.status == st.COMPLETED and found.tasks == (await store.load(workflow_id)).tasks
        finally:
            await store.close()
    run(scenario())


def test_expired_lease_times_out_the_attempt_only_once(store):
    async def scenario():
        try:
            workflow_id = await started_workflow(store, responseTimeoutSeconds=1)
            await store.raise_epoch(3)
            await decide_once(store, 3, workflow_id)
            [claimed] = await store.claim("fetch", 1, "w", NOW)
            due = await store.due(NOW + 999, 10)
            assert due.expired_leases == []
            due = await store.due(NOW + 1000, 10)
            assert due.expired_leases == [(workflow_id, claimed.spec.task_id)]
            with pytest.raises(StaleEpoch):
                await store.expire_lease(2, workflow_id, claimed.spec.task_id, NOW + 1000)
            assert await store.expire_lease(3, workflow_id, claimed.spec.task_id, NOW + 1000) is True
            assert await store.expire_lease(3, workflow_id, claimed.spec.task_id, NOW + 1000) is False
            state = await store.load(workflow_id)
            assert state.tasks[0].runtime.status == st.TASK_TIMED_OUT
            assert workflow_id in (await store.due(NOW + 1000, 10)).workflows   # the decider will retry it
        finally:
            await store.close()
    run(scenario())


def test_a_workflow_the_decider_chokes_on_fails_alone_and_the_others_go_on(store):
    async def scenario():
        try:
            good = await started_workflow(store)
            bad = await started_workflow(store)
            key = store.keys.workflow(bad)
            digest = await store._redis.hget(key, "snap")
            p = store.keys.partition_of(bad)
            snapshot = json.loads(await store._redis.get(store.keys.snapshot(p, digest)))
            snapshot["workflow"]["tasks"] = 5   # what validation would never let in: the decider raises
            await store._redis.set(store.keys.snapshot(p, "broken"), json.dumps(snapshot))
            await store._redis.hset(key, "snap", "broken")
            await store.raise_epoch(1)
            done = await Decider(store).decide([bad, good], epoch=1)
            assert done.failed == [bad]
            assert len((await store.load(good)).tasks) == 1
            failed = await store.load(bad)
            assert failed.status == st.FAILED and "the engine could not decide it: TypeError" in failed.reason
            # nothing left to retry
            assert await store._redis.zscore(store.keys.decide(store.keys.partition_of(bad)), bad) is None
        finally:
            await store.close()
    run(scenario())


def test_a_cached_snapshot_never_outlives_a_registration_on_another_node(store, layout):
    other_node = layout.store(store.prefix)

    async def scenario():
        try:
            task_def = normalise_task_def({"name": "fetch"})
            await store.put_task_def(task_def)
            first = normalise_workflow_def({"name": "w", "tasks": [{"name": "fetch", "taskReferenceName": "a"}]},
                                           {"fetch": task_def})
            await store.put_workflow_def(first)
            one, *_ = await store.start_by_name("w", 0, "wf-1", {}, "", "", NOW)
            second = normalise_workflow_def({**first, "version": 2, "tasks": [
                {"name": "fetch", "taskReferenceName": "b"}]}, {"fetch": task_def})
            await other_node.put_workflow_def(second)     # this node's cache does not know yet
            two, *_ = await store.start_by_name("w", 0, "wf-2", {}, "", "", NOW)
            assert (await store.load(one)).version == 1
            assert (await store.load(two)).version == 2
        finally:
            await store.close()
            await other_node.close()
    run(scenario())


def test_a_start_answers_with_the_workflow_exactly_as_a_load_reads_it(store):
    """The node decides a workflow it created from the start's answer, without reading it back: the
    answer must be what a load returns, field for field (size included); a repeated key creates
    nothing and answers no state."""
    async def scenario():
        try:
            task_def = normalise_task_def({"name": "fetch"})
            await store.put_task_def(task_def)
            await store.put_workflow_def(normalise_workflow_def(
                {"name": "w", "variables": {"seen": 0}, "tasks": [{"name": "fetch", "taskReferenceName": "a"}]},
                {"fetch": task_def}))
            one, two = store.new_workflow_id("key-1"), store.new_workflow_id("key-1")   # in its partition
            started = await store.start_by_name("w", 0, one, {"n": 1}, "corr-1", "key-1", NOW)
            assert started.created and started.state is not None
            assert started.state == await store.load(one)
            again = await store.start_by_name("w", 0, two, {"n": 1}, "corr-1", "key-1", NOW)
            assert again == (one, False, None, None, None)
            # what a waiter for the end reads: the status alone
            assert await store.status(one) == "RUNNING" and await store.status(two) is None
            await store.terminate(one, "done with it", NOW + 1)
            assert await store.status(one) == "TERMINATED"
        finally:
            await store.close()
    run(scenario())


def test_a_start_that_creates_nothing_applies_no_decision_and_one_the_store_refuses_still_starts(layout):
    """The first decision goes with the start only when the start creates the workflow: a repeated
    key applies nothing (the first workflow keeps its revision); a decision over the size limits is
    not sent, and the workflow is created undecided, with its reminder (the event path fails it)."""
    store = layout.store(f"st{uuid.uuid4().hex[:8]}", max_value_bytes=1000)

    async def first(state):
        return decide(state, NOW, new_task_id), {}

    async def scenario():
        try:
            task_def = normalise_task_def({"name": "fetch"})
            await store.put_task_def(task_def)
            await store.put_workflow_def(normalise_workflow_def({"name": "w", "tasks": [
                {"name": "fetch", "taskReferenceName": "a", "inputParameters": {"v": "${workflow.input.v}"}}]},
                {"fetch": task_def}))
            one, two = store.new_workflow_id("key-1"), store.new_workflow_id("key-1")   # in its partition
            started = await store.start_by_name("w", 0, one, {"v": 1}, "", "key-1", NOW, decide=first)
            assert started.applied is not None and started.applied.result is ApplyResult.OK
            decided = await store.load(one)
            assert decided is not None and decided.revision == 2
            again = await store.start_by_name("w", 0, two, {"v": 1}, "", "key-1", NOW, decide=first)
            assert again == (one, False, None, None, None)
            assert await store.load(one) == decided and await store.load(two) is None
            big = await store.start_by_name("w", 0, "wf-3", {"v": "x" * 2000}, "", "", NOW, decide=first)
            assert big.created and big.state is not None and big.decision is None and big.applied is None
            created = await store.load("wf-3")
            assert created == big.state and created.revision == 1 and not created.tasks
            assert await store._redis.zscore(store.keys.decide(store.keys.partition_of("wf-3")),
                                             "wf-3") is not None, "no reminder: never decided"
        finally:
            await store.close()
    run(scenario())


def test_more_concurrent_commands_than_redis_py_pools_by_default_wait_instead_of_failing(store):
    """redis-py 8 caps a pool at 100 connections and fails the 101st concurrent command with
    "Too many connections"; a node's bursts (an event handler's batch, a burst of results) went
    past it, and each failed command cost a redelivery 30 s later. Found by the events bench."""
    async def scenario():
        try:
            stream = f"burst-{uuid.uuid4().hex[:6]}"
            # blocking reads hold their connections for a while, like subscriptions do
            readers = [store._redis.xread({stream: "$"}, block=300) for _ in range(150)]
            writes = [store.publish_event(stream, "{}", "", NOW) for _ in range(150)]
            results = await asyncio.gather(*readers, *writes, return_exceptions=True)
            return [r for r in results if isinstance(r, BaseException)]
        finally:
            await store.close()
    assert run(scenario()) == []


def test_a_task_queued_by_a_node_whose_clock_runs_ahead_is_claimed_at_once(store):
    """Queue scores are the queueing node's clock; a claim by a node whose clock is behind must
    not wait for it (a delayed call-back is held apart instead)."""
    async def scenario():
        try:
            workflow_id = await started_workflow(store)
            await decide_once(store, None, workflow_id, now=NOW + 5_000)   # this node's clock is 5 s ahead
            claimed = await store.claim("fetch", 5, "worker-a", NOW)
            assert [c.workflow_id for c in claimed] == [workflow_id]
            task_id = claimed[0].spec.task_id
            assert await store.release_task(workflow_id, task_id, "worker-a", NOW, delay_ms=2_000,
                                            output_json='{"so_far": 1}')
            assert await store.claim("fetch", 5, "worker-a", NOW + 1_000) == []          # not yet
            again = await store.claim("fetch", 5, "worker-b", NOW + 2_000)
            assert [c.spec.task_id for c in again] == [task_id]
            state = await store.load(workflow_id)
            assert next(t for t in state.tasks if t.task_id == task_id).output == {"so_far": 1}
        finally:
            await store.close()
    run(scenario())


def test_a_claim_takes_the_queue_in_order_past_paused_workflows_and_within_the_concurrency_limit(store):
    """A paused workflow's queued task keeps its place (claimed once it resumes, before the tasks
    queued after it); a concurrency limit hands out only its room and leaves the rest queued, in
    order; a claim on an empty queue changes nothing. (A queue is in order within a partition:
    the workflows here are in one.)"""
    async def scenario():
        try:
            await store.put_task_def(normalise_task_def({"name": "limited", "concurrentExecLimit": 2}))
            ids: list[str] = []
            for i in range(5):
                ids.append(await started_workflow(store, "limited", ids[0] if ids else "", concurrentExecLimit=2))
                await decide_once(store, None, ids[-1], now=NOW + i)   # queued in this order
            await store.operate(ids[0], allowed=[st.RUNNING], new_status=st.PAUSED, now_ms=NOW)
            first = await store.claim("limited", 10, "w", NOW + 10)
            assert [c.workflow_id for c in first] == ids[1:3]   # the limit's room, the paused one skipped
            queue = store.keys.queue(store.keys.partition_of(ids[0]), "limited")
            assert [m.split("|")[0] for m in await store._redis.zrange(queue, 0, -1)] == [ids[0], *ids[3:]]
            for claimed in first:
                await store.complete_task(claimed.workflow_id, claimed.spec.task_id, "w", st.TASK_COMPLETED, "{}",
                                          "", NOW + 20)
            assert await store.claim("limited", 10, "w", NOW + 25) == []   # counted until released
            assert await store.release_freed() == 2                     # what the leader's clocks do
            await store.operate(ids[0], allowed=[st.PAUSED], new_status=st.RUNNING, now_ms=NOW + 30)
            second = await store.claim("limited", 10, "w", NOW + 40)
            assert [c.workflow_id for c in second] == [ids[0], ids[3]]   # its place kept
            assert [m.split("|")[0] for m in await store._redis.zrange(queue, 0, -1)] == [ids[4]]
            assert await store.claim("nothing_queued", 10, "w", NOW) == []
        finally:
            await store.close()
    run(scenario())


def test_search_keeps_namespaces_apart_and_never_scans_without_bound(store, monkeypatch):
    """The default namespace has no index of its own (its workflows predate namespaces): a search
    there reads the index of all workflows and skips the others, at most MAX_SCANNED of them
    per page, answering a short page with a cursor that goes on; a team's search reads its own
    index. Before the bound, one page of a quiet default namespace read every team workflow."""
    from orchestrator.core import free_text

    async def start(name: str, count: int, at: int) -> list[str]:
        definition = normalise_workflow_def({"name": name.rpartition(":")[2], "tasks": [
            {"name": "x", "taskReferenceName": "x", "type": "NOOP"}]}, {})
        definition["name"] = name
        ids = []
        for i in range(count):
            ids.append(uuid.uuid4().hex)
            await store.start_workflow(ids[-1], {"workflow": definition, "taskDefs": {}, "subWorkflows": {}},
                                       {}, "", "", at + i)
        return ids

    async def every_page(namespace: str) -> tuple[list[str], int]:
        found, cursor, pages = [], "", 0
        while True:
            page = await store.search(name="", status="", correlation_id="", cursor=cursor, limit=10,
                                      namespace=namespace)
            found += page.workflow_ids
            pages += 1
            if not page.next_cursor:
                return found, pages
            cursor = page.next_cursor

    async def scenario() -> None:
        try:
            ours = await start("w", 2, NOW)
            theirs = await start("team-a:w", 250, NOW + 10)
            monkeypatch.setattr(free_text, "MAX_SCANNED", 100)
            found, pages = await every_page("")
            assert sorted(found) == sorted(ours) and pages >= 2   # bounded pages, none of team a's
            found, _ = await every_page("team-a")
            assert sorted(found) == sorted(theirs)
            assert (await store.search(name="team-a:w", status="", correlation_id="", cursor="", limit=5,
                                       namespace="")).workflow_ids == []   # a name of another namespace: nothing
        finally:
            await store.close()
    run(scenario())


def test_an_event_read_acknowledges_the_batch_before_and_a_lost_group_is_made_again(store):
    """An event handler's consumer reads, handles, and acknowledges what it handled with its next read
    (XACK and XREADGROUP in one round trip; on one Redis through the lean pipeline). A group that went
    away (Redis lost it) is made again for a handler that exists, and the read finds nothing."""
    async def scenario():
        try:
            topic = f"orders-{uuid.uuid4().hex[:6]}"
            await store.put_event_handler({"name": "h", "event": topic, "actions": []})
            stream = store.keys.events(topic)
            await store.publish_event(topic, '{"n": 1}', "k1", NOW)
            first = await store.receive_events("h", topic, "node-a", 10, 200)
            assert [(json.loads(e.payload_json), e.key) for e in first] == [({"n": 1}, "k1")]
            assert (await store._redis.xpending(stream, "h"))["pending"] == 1
            assert await store.receive_events("h", topic, "node-a", 10, 50, ack=[first[0].event_id]) == []
            assert (await store._redis.xpending(stream, "h"))["pending"] == 0
            await store._redis.xgroup_destroy(stream, "h")
            assert await store.receive_events("h", topic, "node-a", 10, 50) == []   # NOGROUP: made again at "$"
            await store.publish_event(topic, '{"n": 2}', "", NOW)
            assert [json.loads(e.payload_json) for e in await store.receive_events("h", topic, "node-a", 10, 200)] \
                == [{"n": 2}]
        finally:
            await store.close()
    run(scenario())

"""Every script call and hot read of one event-loop turn goes to Redis in one pipeline (issue 21),
against a real Redis: each call keeps its own reply or error, and a script cache emptied between
calls (SCRIPT FLUSH, as after a Redis restart) is filled again without the caller noticing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis.exceptions import ResponseError

from helpers_layouts import StoreLayout
from orchestrator.core.definitions import normalise_task_def, normalise_workflow_def
from orchestrator.core.namespaces import as_stored
from orchestrator.core.decider import decide
from orchestrator.core.schema import Snapshot
from orchestrator.cluster.deciding import new_task_id
from orchestrator.store import ApplyResult
from orchestrator.store.protocol import Quotas
from orchestrator.store.redis import RedisStore as Store
from orchestrator.store.redis.adapter import Call
from orchestrator.store.redis import lean_pipeline, scripts
from orchestrator.core import statuses as st

NOW = 1_700_000_000_000
REFUSING_SCRIPT = "return redis.error_reply('REFUSED by this test')"


class RoundTrips:
    """Counts what the store sends: pipelines run (its own on one connection, or redis-py's) and
    single commands (each one socket write and one wait for replies). The work itself is still done."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pipelines = 0
        self.commands = 0
        # the loop turns' pipelines have a client of their own; the other commands use the store's
        for client in {id(c): c for c in (store._redis, store._pipelines)}.values():
            self._count(client)
        execute = lean_pipeline.execute

        async def counted_lean(*args: Any, **kwargs: Any) -> Any:
            self.pipelines += 1
            return await execute(*args, **kwargs)
        monkeypatch.setattr(lean_pipeline, "execute", counted_lean)

    def _count(self, client: Any) -> None:
        pipeline, execute_command = client.pipeline, client.execute_command

        def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
            self.pipelines += 1
            return pipeline(*args, **kwargs)

        async def counted_command(*args: Any, **kwargs: Any) -> Any:
            self.commands += 1
            return await execute_command(*args, **kwargs)

        client.pipeline, client.execute_command = counted_pipeline, counted_command

    @property
    def total(self) -> int:
        return self.pipelines + self.commands


@pytest.fixture
def store(layout: StoreLayout) -> Iterator[Store]:
    yield layout.store(f"co{uuid.uuid4().hex[:8]}")


async def _queued_workflow(store: Store, task_name: str) -> str:
    """A workflow started and decided: its first task waits in the queue of `task_name`. Every
    workflow of a store's tests is in one partition (that of the id 'co'), which the store knows to
    hold that queue (as a node does from the broadcasts): a claim is one call."""
    task_def = normalise_task_def({"name": task_name, "retryDelaySeconds": 0})
    definition = normalise_workflow_def({"name": "w", "tasks": [
        {"name": task_name, "taskReferenceName": "a"}]}, {task_name: task_def})
    snapshot: Snapshot = {"workflow": definition, "taskDefs": {task_name: task_def}, "subWorkflows": {}}
    workflow_id = store.new_workflow_id_beside("co")
    await store.start_workflow(workflow_id, snapshot, {}, "", "", NOW)
    state = await store.load(workflow_id)
    assert state is not None
    [outcome] = await store.apply_decisions(None, NOW, [(state, decide(state, NOW, new_task_id))])
    assert outcome.result is ApplyResult.OK
    store._ready.listening(task_name)
    await store._scan_ready(task_name, NOW)
    return workflow_id


def _partition_apart(layout: StoreLayout, store: Store, workflow_id: str) -> int:
    """A partition other than the workflow's, and on a Redis Cluster one of another master: a turn of
    calls in both goes to Redis in two pipelines there (one per master), in one on one Redis."""
    home = store.keys.partition_of(workflow_id)
    server = layout.server_of(store.keys.partition(home))
    return next(p for p in store.keys.all_partitions()
                if p != home and (not layout.on_cluster or layout.server_of(store.keys.partition(p)) != server))


async def _loaded(store: Store, *sources: str) -> None:
    """The scripts in Redis's cache already (another test may have flushed it), so that a turn
    is counted without the round trip that loads them."""
    for source in sources:
        await store._redis.script_load(source)


def test_the_script_calls_and_reads_of_one_turn_share_one_pipeline(store: Store,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        try:
            ids = [await _queued_workflow(store, "co_a") for _ in range(3)]
            [claimed] = await store.claim("co_a", 1, "w1", NOW)
            await _loaded(store, scripts.CLAIM, scripts.HEARTBEAT)
            trips = RoundTrips(store, monkeypatch)
            heartbeat, claims, status, loaded = await asyncio.gather(
                store.heartbeat(claimed.workflow_id, claimed.spec.task_id, "w1", NOW + 1),
                store.claim("co_a", 5, "w2", NOW), store.status(ids[0]), store.load_many(ids))
            assert heartbeat > 0
            assert len(claims) == 2 and claimed.spec.task_id not in {c.spec.task_id for c in claims}
            assert status is st.WorkflowStatus.RUNNING
            assert [w.workflow_id for w in loaded if w is not None] == ids
            assert (trips.pipelines, trips.commands) == (1, 0), "four calls of one turn: one round trip"
        finally:
            await store.close()
    asyncio.run(scenario())


def test_a_refused_call_fails_alone_and_the_others_of_its_turn_get_their_answers(
        layout: StoreLayout, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        try:
            workflow_id = await _queued_workflow(store, "co_b")
            apart = store.keys.partition(_partition_apart(layout, store, workflow_id))
            await store._redis.set(store.keys.workflow("not-a-hash"), "text")
            await _loaded(store, scripts.CLAIM, REFUSING_SCRIPT)
            trips = RoundTrips(store, monkeypatch)
            answers: tuple[Any, ...] = await asyncio.gather(
                store.claim("co_b", 1, "w", NOW), store._run(REFUSING_SCRIPT, {}, at=apart),
                store.status(workflow_id),
                return_exceptions=True)
            claims, refused, status = answers
            assert isinstance(refused, ResponseError) and "REFUSED by this test" in str(refused)
            assert [c.workflow_id for c in claims] == [workflow_id]
            assert status is st.WorkflowStatus.RUNNING
            assert trips.total == (2 if layout.on_cluster else 1), "one pipeline per master of the turn's calls"
            with pytest.raises(ResponseError, match="WRONGTYPE"):   # a read's error reaches its caller
                await store.load("not-a-hash")
        finally:
            await store.close()
    asyncio.run(scenario())


def test_scripts_flushed_between_calls_are_loaded_again_and_run(layout: StoreLayout, store: Store,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        try:
            first = await _queued_workflow(store, "co_c")
            second = await _queued_workflow(store, "co_c")
            apart = store.keys.partition(_partition_apart(layout, store, first))
            await store._redis.script_flush()      # as after a Redis restart: no script is known
            [claimed] = await store.claim("co_c", 1, "w", NOW)   # a turn of one call
            assert claimed.workflow_id in (first, second)
            other = second if claimed.workflow_id == first else first
            await store._redis.script_flush()
            trips = RoundTrips(store, monkeypatch)
            # one turn of several scripts, two calls of the same one among them: each script
            # is loaded once and every call runs, the refused one still refused alone (on a Redis
            # Cluster the refused one on another master, so the turn is two pipelines)
            answers: tuple[Any, ...] = await asyncio.gather(
                store.heartbeat(claimed.workflow_id, claimed.spec.task_id, "w", NOW + 1),
                store.claim("co_c", 1, "w", NOW), store.claim("co_c", 1, "w", NOW),
                store._run(REFUSING_SCRIPT, {}, at=apart),
                return_exceptions=True)
            heartbeat, claims, again, refused = answers
            assert heartbeat > 0
            assert [c.workflow_id for c in claims] == [other] and again == []
            assert isinstance(refused, ResponseError) and "REFUSED" in str(refused)
            if not layout.on_cluster:
                assert trips.total == 2, "the turn, then the scripts loaded and the calls again in one more"
            else:   # its cluster pipelines refuse SCRIPT LOAD: the three scripts are loaded by three commands
                assert trips.total == 2 + 3 + 2, "the turn (a pipeline per master), the scripts loaded, the calls again"
            assert await store.status(first) is st.WorkflowStatus.RUNNING
        finally:
            await store.close()
    asyncio.run(scenario())


def test_a_read_after_a_script_in_one_turn_sees_its_write_even_when_the_script_was_reloaded(store: Store) -> None:
    """A step reads its record back in its own pipeline, right after its script (ExecuteWorkflow's
    answer): with the script cache emptied, the script runs only in the second pipeline, after it
    is loaded, so the read that followed it runs again there too."""
    writing = "redis.call('SET', ARGV[1], ARGV[2]); return 'OK'"

    async def scenario() -> list[Any]:
        try:
            key = store.keys("co", uuid.uuid4().hex)   # in the global slot, where the script runs
            await store._redis.script_flush()
            return await store._calls.replies([Call(writing, (key, "written"), store.keys.global_prefix),
                                               Call("", ("GET", key))])
        finally:
            await store.close()

    assert asyncio.run(scenario()) == ["OK", "written"]


def test_claims_that_find_their_types_look_due_together_share_one_look(store: Store) -> None:
    """A REST poller's threads claim a type at once: when its partitions are due to be looked at
    whole, the claims wait for one look instead of each reading every partition (eight looks of 64
    partitions each per second and node took a quarter of conductor-python's Redis commands)."""
    async def scenario() -> None:
        try:
            ids = {await _queued_workflow(store, "co_e") for _ in range(3)}
            store._ready.forget("co_e")   # due: the next claims look at every partition first
            looks = 0
            scan_ready = store._scan_ready

            async def counted(task_type: str, now_ms: int) -> list[tuple[int, int]]:
                nonlocal looks
                looks += 1
                return await scan_ready(task_type, now_ms)

            store._scan_ready = counted   # type: ignore[method-assign]
            claims = await asyncio.gather(*(store.claim("co_e", 1, f"w{i}", NOW) for i in range(8)))
            assert looks == 1
            assert sorted(c.workflow_id for claimed in claims for c in claimed) == sorted(ids)
            assert len(store._scans) == 0, "the look under way is forgotten once it ended"
        finally:
            await store.close()
    asyncio.run(scenario())


def test_starts_that_find_their_namespaces_count_out_of_date_together_share_one_read(layout: StoreLayout) -> None:
    """Under a workflows-in-flight quota a start reads its namespace's count in every partition when
    the count it knows is out of date: the starts of one burst share that read (each of 128 starts
    in flight read all 64 partitions: 2 - 4 SCARDs per workflow at the throughput bench's peak)."""
    async def scenario() -> None:
        store = layout.store(f"co{uuid.uuid4().hex[:8]}", quotas=Quotas(workflows_in_flight=1000))
        try:
            definition = as_stored("sf", normalise_workflow_def({"name": "w", "tasks": [
                {"name": "h", "taskReferenceName": "h", "type": "HUMAN"}]}, {}))
            snapshot: Snapshot = {"workflow": definition, "taskDefs": {}, "subWorkflows": {}}
            reads = 0   # reads of every partition (a start makes no other)
            each_partition = store._each_partition

            async def counted(commands: list[list[tuple[Any, ...]]]) -> list[list[Any] | None]:
                nonlocal reads
                reads += 1
                return await each_partition(commands)

            store._each_partition = counted   # type: ignore[method-assign]
            started = await asyncio.gather(*(store.start_workflow(store.new_workflow_id(), snapshot, {}, "", "", NOW)
                                             for _ in range(8)))
            assert reads == 1 and len({workflow_id for workflow_id, _ in started}) == 8
            assert sum(store._in_flight["sf"][1]) == 0, "the count as read before these starts"
            store._in_flight.clear()   # out of date again: the next start reads, and counts the eight
            await store.start_workflow(store.new_workflow_id(), snapshot, {}, "", "", NOW)
            assert reads == 2 and sum(store._in_flight["sf"][1]) == 8
        finally:
            await store.close()
    asyncio.run(scenario())


def test_a_claim_right_after_the_decision_that_queued_a_task_finds_it_before_its_broadcast(store: Store) -> None:
    """A REST worker's `update-v2` stores its result and is answered with its next task: the claim
    comes right after the step that queued it, before that step's `ready` broadcast comes back (here
    none ever comes: nothing listens). The node that applied the decision knows where it queued."""
    async def scenario() -> None:
        try:
            task_def = normalise_task_def({"name": "co_f", "retryDelaySeconds": 0})
            definition = normalise_workflow_def({"name": "w", "tasks": [
                {"name": "co_f", "taskReferenceName": "a"}]}, {"co_f": task_def})
            snapshot: Snapshot = {"workflow": definition, "taskDefs": {"co_f": task_def}, "subWorkflows": {}}
            store._ready.listening("co_f")
            assert await store._scan_ready("co_f", NOW) == [], "nothing queued yet: no partition known"
            workflow_id = store.new_workflow_id()
            await store.start_workflow(workflow_id, snapshot, {}, "", "", NOW)
            state = await store.load(workflow_id)
            assert state is not None
            [outcome] = await store.apply_decisions(None, NOW, [(state, decide(state, NOW, new_task_id))])
            assert outcome.result is ApplyResult.OK
            assert [c.workflow_id for c in await store.claim("co_f", 1, "w", NOW)] == [workflow_id]
        finally:
            await store.close()
    asyncio.run(scenario())


def test_calls_whose_connections_redis_closed_are_sent_again_on_new_ones(layout: StoreLayout, store: Store) -> None:
    """A pipeline's connection that Redis closed while it sat in the pool (a restart, a timeout,
    CLIENT KILL) fails no call: the calls are answered on new connections, on either layout (the
    store's own pipelines on a Redis Cluster hand such calls to redis-py's, which connects again)."""
    async def scenario() -> None:
        try:
            workflow_id = await _queued_workflow(store, "co_k")
            for _ in range(3):   # a turn of one call, then one of several, then one again
                for server in layout.servers():
                    with server:
                        server.client_kill_filter(_type="normal", skipme=True)
                statuses = await asyncio.gather(*[store.status(workflow_id) for _ in range(3)])
                assert statuses == [st.WorkflowStatus.RUNNING] * 3
                assert await store.status(workflow_id) is st.WorkflowStatus.RUNNING
        finally:
            await store.close()
    asyncio.run(scenario())

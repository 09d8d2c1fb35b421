"""`RedisStore.from_cluster` on a real Redis Cluster (3 masters, a replica each): what its client does that
one Redis never asks of it (issue 23)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from devtools.redis_cluster import ClusterMember, LocalRedisCluster, key_slot
from orchestrator.core.definitions import normalise_task_def
from orchestrator.core.errors import NotFound
from orchestrator.store.protocol import StoreUnavailable, Topic
from orchestrator.store.redis import RedisStore
from orchestrator.store.redis.keys import Keys, cluster_prefix


REPLICA_TIMEOUT_MS = 1000   # how long an acknowledged write waits for a replica in these tests


@pytest.fixture
def prefix() -> Iterator[str]:
    yield cluster_prefix(f"s{uuid.uuid4().hex[:8]}")


def workflow_on(redis_cluster: LocalRedisCluster, keys: Keys, port: int, other_than: bool = False) -> str:
    """A workflow id whose partition the master on `port` serves (or, `other_than`, does not)."""
    while True:
        workflow_id = uuid.uuid4().hex
        on_it = redis_cluster.master_of_key(keys.workflow(workflow_id)).port == port
        if on_it != other_than:
            return workflow_id


async def a_master_and_workflows(redis_cluster: LocalRedisCluster, store: RedisStore) -> tuple[ClusterMember, str, str]:
    """The first master, a workflow id its partitions hold and one they do not, both read once (the
    store then has connections to both masters)."""
    victim = redis_cluster.masters()[0]
    on_victim = workflow_on(redis_cluster, store.keys, victim.port)
    elsewhere = workflow_on(redis_cluster, store.keys, victim.port, other_than=True)
    assert list(await asyncio.gather(store.status(on_victim), store.status(elsewhere))) == [None, None]
    return victim, on_victim, elsewhere


def test_definitions_health_and_one_master_down(redis_cluster: LocalRedisCluster, prefix: str) -> None:
    async def run() -> None:
        store = RedisStore.from_cluster(redis_cluster.seeds[:1], prefix)
        try:
            await store.prepare()
            health = await store.health()
            assert health.ok and health.details["cluster_state"] == "ok", health
            # a MULTI block of the global slot (the cluster client's transactional pipeline)
            await store.put_task_def(normalise_task_def({"name": "limited", "concurrentExecLimit": 2}))
            stored = await store.get_task_def("limited")
            assert stored is not None and stored["concurrentExecLimit"] == 2

            victim, on_victim, elsewhere = await a_master_and_workflows(redis_cluster, store)
            redis_cluster.kill(victim)
            try:
                # its connections broke: a read fails and drops them; the next ones cannot connect
                with pytest.raises(StoreUnavailable):
                    await store.status(on_victim)
                # both reads go in one loop turn's pipeline; the dead master fails its own alone
                dead, alive = await asyncio.gather(store.status(on_victim), store.status(elsewhere),
                                                   return_exceptions=True)
                assert isinstance(dead, StoreUnavailable), dead
                assert alive is None
                # the leader's sweeps over every partition pass over the dead master's (they used to
                # fail whole, and the leader resigned after 2 s of it)
                assert (await store.due(int(time.time() * 1000), 100)).workflows == []
                assert await store.release_freed(None, int(time.time() * 1000)) == 0
                assert await store.relay_events(None) == 0
                # a new id without an idempotency key avoids the partitions of a master that failed
                fresh = [store.new_workflow_id() for _ in range(200)]
                assert [w for w in fresh if redis_cluster.master_of_key(store.keys.workflow(w)) is victim] == []
                redis_cluster.wait_for_promotion(victim)
                assert await store.status(on_victim) is None   # the promoted replica answers for its slots
            finally:
                redis_cluster.restart(victim)
                redis_cluster.wait_healthy()
        finally:
            await store.close()
    asyncio.run(run())


def test_a_frozen_master_holds_up_only_the_calls_it_serves(redis_cluster: LocalRedisCluster, prefix: str) -> None:
    """A loop turn's calls go to each master in a pipeline of its own. Their replies are handed over
    together when every master answers within SETTLE_TOGETHER_S (the callers then resume in one turn
    and what they send next goes in one batch); past it, each master's as they come: a frozen master
    (SIGSTOP, shorter than the cluster's node timeout) holds up its own partitions' calls only. The
    calls of later turns, which wait for the pipelines on their way (coalesce.py), wait for the
    frozen master's no longer than the hold (50 ms)."""
    async def run() -> None:
        store = RedisStore.from_cluster(redis_cluster.seeds[:1], prefix)
        try:
            await store.prepare()
            victim, on_victim, elsewhere = await a_master_and_workflows(redis_cluster, store)
            redis_cluster.pause(victim)
            try:
                frozen = asyncio.ensure_future(store.status(on_victim))   # the same turn as the next call
                assert await asyncio.wait_for(store.status(elsewhere), 0.4) is None
                for _ in range(3):   # later turns, each sent beside the frozen pipeline after the hold
                    assert await asyncio.wait_for(store.status(elsewhere), 0.4) is None
                assert not frozen.done()
            finally:
                redis_cluster.resume(victim)
            assert await asyncio.wait_for(frozen, 5) is None   # answered once its master runs again
        finally:
            await store.close()
            redis_cluster.wait_healthy()
    asyncio.run(run())


def test_wake_ups_go_on_while_the_global_slots_master_is_down(redis_cluster: LocalRedisCluster,
                                                               prefix: str) -> None:
    """Every channel is in the global slot; a PUBLISH reaches every server, so a subscription lost with
    that slot's master is made again on another server at once, not after the promotion (redis-py's
    choice, that slot's master: nothing heard for 8 s after the kill)."""
    async def run() -> None:
        store = RedisStore.from_cluster(redis_cluster.seeds[:1], prefix)
        heard: list[float] = []
        listening = asyncio.create_task(store.listen(Topic.TIMER, lambda _payload: heard.append(time.monotonic())))
        channel = store.keys.channel(Topic.TIMER.value)
        victim = redis_cluster.master_of_key(channel)
        publisher = redis_cluster.client(next(m for m in redis_cluster.masters() if m is not victim))
        try:
            async def publish_for(seconds: float) -> None:
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    await asyncio.to_thread(publisher.publish, channel, "1")
                    await asyncio.sleep(0.05)
            await publish_for(0.5)
            assert heard, "nothing heard before the kill"
            redis_cluster.kill(victim)
            killed_at = time.monotonic()
            await publish_for(2.0)
            assert [at for at in heard if at > killed_at + 1.0], "no wake-up within 1 to 2 s of the kill"
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
            publisher.close()
            await store.close()
            if not victim.alive():
                redis_cluster.wait_for_promotion(victim)
                redis_cluster.restart(victim)
                redis_cluster.wait_healthy()
    asyncio.run(run())


def test_an_acknowledged_write_waits_for_a_replica_of_its_own_master(redis_cluster: LocalRedisCluster,
                                                                     prefix: str) -> None:
    """With min_replicas, a write is confirmed by WAIT on the master that took it: one whose replica is
    frozen refuses to acknowledge (StoreUnavailable, the write stored but not confirmed), while a write
    to another master's partition is acknowledged as usual, and a definition (the global slot) waits
    on the global slot's master."""
    async def run() -> None:
        store = RedisStore.from_cluster(redis_cluster.seeds[:1], prefix, min_replicas=1,
                                        replica_timeout_ms=REPLICA_TIMEOUT_MS)
        try:
            await store.prepare()
            master = redis_cluster.master_of_key(store.keys.partition(0))
            stalled = workflow_on(redis_cluster, store.keys, master.port)
            fine = workflow_on(redis_cluster, store.keys, master.port, other_than=True)
            async def terminate(workflow_id: str) -> None:
                """A refusal ('no such workflow') is acknowledged as a write is: once a replica holds
                what it read."""
                with pytest.raises(NotFound):
                    await store.terminate(workflow_id, "nothing to end", 1)
            # the tests before restarted masters: every replica in sync again first (not measured)
            for workflow_id in (fine, stalled):
                for attempt in range(20):
                    try:
                        await terminate(workflow_id)
                        break
                    except StoreUnavailable:
                        assert attempt < 19, "a replica never confirmed a write"
            [replica] = redis_cluster.replicas_of(master)
            redis_cluster.pause(replica)
            try:
                began = time.monotonic()
                with pytest.raises(StoreUnavailable, match="not confirmed by 1 replica"):
                    await store.terminate(stalled, "nothing to end", 1)
                assert REPLICA_TIMEOUT_MS / 1000 - 0.1 < time.monotonic() - began < REPLICA_TIMEOUT_MS / 1000 + 2
                await terminate(fine)   # its master's replica is not frozen
            finally:
                redis_cluster.resume(replica)
            await terminate(stalled)
            await store.put_task_def(normalise_task_def({"name": "replicated"}))
            assert store.replication is not None and store.replication.rounds >= 4
        finally:
            await store.close()
    asyncio.run(run())


def test_a_script_on_a_moving_slot_writes_nothing_until_the_move_is_over(redis_cluster: LocalRedisCluster,
                                                                        prefix: str) -> None:
    """A slot moved by hand as `redis-cli --cluster reshard` moves it (SETSLOT IMPORTING / MIGRATING,
    MIGRATE key by key, SETSLOT NODE): while it moves, a partition's script is refused before its
    first write on either master (scripts.COMMON's fence; without it, it ran on the new master over
    the keys moved so far, or stopped halfway on the old one), and goes through once the move is over."""
    async def run() -> None:
        store = RedisStore.from_cluster(redis_cluster.seeds[:1], prefix)
        try:
            await store.prepare()
            workflow_id = uuid.uuid4().hex
            decide_key = store.keys.decide(store.keys.partition_of(workflow_id))
            slot = key_slot(decide_key)
            source = redis_cluster.master_of_slot(slot)
            target = next(m for m in redis_cluster.masters() if m is not source)
            old, new = redis_cluster.client(source), redis_cluster.client(target)
            old.hset(store.keys.workflow(workflow_id), "st", "RUNNING")   # enough of a record for DEFER
            await store.defer(None, workflow_id, 1000)
            try:
                new.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
                old.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
                with pytest.raises(StoreUnavailable, match="moving to another master"):
                    await store.defer(None, workflow_id, 2000)   # every key still on the old master
                keys = old.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
                assert decide_key in keys
                old.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
                with pytest.raises(StoreUnavailable, match="moving to another master"):
                    await store.defer(None, workflow_id, 3000)   # every key on the new one, the slot not yet
            finally:
                for master in redis_cluster.masters():
                    redis_cluster.client(master).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
                old.close()
                new.close()
            redis_cluster.wait_healthy()
            assert redis_cluster.client(target).zscore(decide_key, workflow_id) == 1000   # neither wrote
            await store.defer(None, workflow_id, 4000)
            assert redis_cluster.client(target).zscore(decide_key, workflow_id) == 4000
        finally:
            await store.close()
    asyncio.run(run())

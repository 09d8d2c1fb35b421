"""`RedisStore.from_cluster` on a real Redis Cluster (3 masters, a replica each): what its client does that
one Redis never asks of it (issue 23)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from devtools.redis_cluster import LocalRedisCluster
from orchestrator.core.definitions import normalise_task_def
from orchestrator.store.protocol import StoreUnavailable, Topic
from orchestrator.store.redis import RedisStore
from orchestrator.store.redis.keys import Keys, cluster_prefix


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

            victim = redis_cluster.masters()[0]
            on_victim = workflow_on(redis_cluster, store.keys, victim.port)
            elsewhere = workflow_on(redis_cluster, store.keys, victim.port, other_than=True)
            assert list(await asyncio.gather(store.status(on_victim), store.status(elsewhere))) == [None, None]
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
                redis_cluster.wait_for_promotion(victim)
                assert await store.status(on_victim) is None   # the promoted replica answers for its slots
            finally:
                redis_cluster.restart(victim)
                redis_cluster.wait_healthy()
        finally:
            await store.close()
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


def test_min_replicas_is_refused_on_a_redis_cluster() -> None:
    with pytest.raises(ValueError, match="redis_min_replicas cannot be used with redis_cluster yet"):
        RedisStore.from_cluster(["127.0.0.1:7000"], "wfo", min_replicas=1)

"""The bench's completion watchers against real servers: each end written to an `ended` stream is
seen once, with its status and time, whichever stream (and Redis Cluster master) holds it."""

from __future__ import annotations

import uuid

from redis.cluster import RedisCluster

from bench.load import ClusterEndedWatcher, cluster_nodes
from devtools.redis_cluster import LocalRedisCluster
from orchestrator.store.redis.keys import Keys


def test_the_redis_cluster_watcher_sees_ends_on_every_master_and_none_from_before(
        redis_cluster: LocalRedisCluster) -> None:
    keys = Keys(f"w{uuid.uuid4().hex[:6]}")
    streams = [keys.ended(p) for p in keys.all_partitions()]
    client = RedisCluster(startup_nodes=cluster_nodes(redis_cluster.seeds), decode_responses=True)
    try:
        masters = {client.get_node_from_key(stream).name for stream in streams}
        assert len(masters) == 3, "the partitions' streams are spread over the three masters"
        client.xadd(streams[0], {"wf": "before", "st": "COMPLETED", "at": "1"})
        with ClusterEndedWatcher(redis_cluster.seeds, streams) as watcher:
            for n, stream in enumerate(streams):
                client.xadd(stream, {"wf": f"wf-{n}", "st": "FAILED" if n % 2 else "COMPLETED", "at": str(1000 + n)})
            for n in range(len(streams)):
                seen = watcher.wait(f"wf-{n}", timeout_s=10)
                assert seen is not None, f"the end in {streams[n]} was not seen"
                assert (seen.status, seen.at_ms) == ("FAILED" if n % 2 else "COMPLETED", 1000 + n)
            client.xadd(streams[5], {"wf": "later", "st": "COMPLETED", "at": "2"})   # a stream read twice
            assert watcher.wait("later", timeout_s=10) is not None
            assert watcher.wait("before", timeout_s=0.3) is None, "an end from before the watcher began"
    finally:
        client.close()

"""Redis behind Sentinel (the production layout): the master dies, a replica takes over, work goes on."""

from __future__ import annotations

import time

import redis

from helpers import BackgroundWorker, register_sequence, unique, wait_for_status
from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import free_port, start_redis, start_sentinel
from worker import Worker, WorkflowClient, task


def test_node_follows_the_master_sentinel_promotes(tmp_path, etcd):
    master = start_redis(tmp_path / "master")
    replica = start_redis(tmp_path / "replica", replica_of=master.port)
    sentinel = start_sentinel(tmp_path / "sentinel", master.port, down_after_ms=500)
    port = free_port()
    node = start_node(tmp_path / "logs", node_id="via-sentinel", port=port, redis_url="", cluster=unique("sen"),
                      etcd_endpoints=etcd.endpoints, lease_ttl_s=2.0, redis_sentinels=[sentinel.address])
    client = WorkflowClient([f"127.0.0.1:{port}"], timeout_s=20.0)
    name, task_type = unique("wf"), unique("t")

    @task(task_type)
    def handler(data: dict) -> dict:
        return {"n": data["n"]}

    background = None
    try:
        wait_for_leader(client, 20.0)
        register_sequence(client, name, [task_type], retryCount=5, retryDelaySeconds=0.2)
        background = BackgroundWorker(Worker(endpoints=[f"127.0.0.1:{port}"], handlers=[handler]))
        before = client.start_workflow(name, {"n": 1})
        wait_for_status(client, before, "COMPLETED")
        replicated = redis.Redis(port=replica.port)
        deadline = time.monotonic() + 10
        while replicated.info("replication")["master_repl_offset"] < redis.Redis(port=master.port).info(
                "replication")["master_repl_offset"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)

        master.process.kill()   # the master dies; Sentinel promotes the replica
        deadline = time.monotonic() + 30
        while redis.Redis(port=replica.port).info("replication")["role"] != "master":
            assert time.monotonic() < deadline, "Sentinel did not promote the replica"
            time.sleep(0.1)
        after = client.start_workflow(name, {"n": 2})
        assert wait_for_status(client, after, "COMPLETED", timeout_s=30)["output"]["step0"] == {"n": 2}
        assert client.get_workflow(before)["status"] == "COMPLETED"   # replicated before the failover
    finally:
        if background is not None:
            background.stop()
        client.close()
        node.stop()
        sentinel.stop()
        replica.stop()
        master.stop()

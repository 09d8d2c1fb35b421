"""How a node is told where Redis is: one way of three. A node given `redis_cluster` (`--redis-cluster`) keeps
its state on that Redis Cluster (issue 23); Sentinels and a URL are not given together either."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import EtcdCluster, free_port
from devtools.redis_cluster import LocalRedisCluster
from orchestrator.cli import main
from orchestrator.config import DEFAULT_REDIS_URL, NodeConfig
from orchestrator.store.redis.keys import Keys, cluster_prefix
from worker import WorkflowClient

SEEDS = "127.0.0.1:7000,127.0.0.1:7001"


def node_argv(*flags: str) -> list[str]:
    """`orchestrator node`'s arguments with `flags`, on free loopback ports."""
    return ["node", "--node-id", "partitioned", "--listen", f"127.0.0.1:{free_port()}", "--http-listen", "",
            "--etcd", f"127.0.0.1:{free_port()}", "--cluster", f"c{uuid.uuid4().hex[:8]}", *flags]


@dataclass
class Ended:
    returncode: int
    stderr: str


@pytest.fixture
def node(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ended]:
    """`orchestrator node` run in this process (the command's own code path, without a second interpreter's
    start-up): its exit code and what it wrote on stderr."""
    def run(*flags: str) -> Ended:
        capsys.readouterr()
        code = main(node_argv(*flags))
        return Ended(code, capsys.readouterr().err)
    return run


def test_a_node_given_a_redis_cluster_runs_on_it(tmp_path: Path, etcd: EtcdCluster,
                                                redis_cluster: LocalRedisCluster) -> None:
    """It refused to start until issue 23; now it serves, and its workflows' state is on the cluster."""
    port = free_port()
    cluster = f"c{uuid.uuid4().hex[:8]}"
    process = start_node(tmp_path, node_id="partitioned", port=port, redis_url="", etcd_endpoints=etcd.endpoints,
                         cluster=cluster, lease_ttl_s=2.0, http_port=0,
                         extra=["--redis-cluster", ",".join(redis_cluster.seeds[:2])])
    client = WorkflowClient([f"127.0.0.1:{port}"], timeout_s=15.0)
    try:
        wait_for_leader(client, 30.0)
        client.register_workflow_def({"name": "nothing", "version": 1, "tasks": [
            {"name": "n", "taskReferenceName": "n", "type": "NOOP"}]})
        done = client.execute_workflow("nothing", {})
        assert done["status"] == "COMPLETED"
        key = Keys(cluster_prefix(cluster)).workflow(done["workflow_id"])
        with redis_cluster.client(redis_cluster.master_of_key(key)) as master:   # read where its slot lives
            assert master.hget(key, "st") == "COMPLETED"
    finally:
        client.close()
        process.stop()


def test_redis_cluster_goes_alone_and_names_servers(tmp_path: Path, node: Callable[..., Ended]) -> None:
    both = node("--redis-cluster", SEEDS, "--redis-url", "redis://127.0.0.1:6379/0")
    assert both.returncode == 2 and "redis_cluster and redis_url are both given" in both.stderr
    config = tmp_path / "node.yaml"
    config.write_text("redis_sentinels: [127.0.0.1:26379]\n")
    with_sentinels = node("--config", str(config), "--redis-cluster", SEEDS)
    assert with_sentinels.returncode == 2
    assert "redis_cluster and redis_sentinels are both given" in with_sentinels.stderr
    not_a_server = node("--redis-cluster", "127.0.0.1:7000,redis-a")
    assert not_a_server.returncode == 2 and "redis_cluster: 'redis-a' is not host:port" in not_a_server.stderr
    with pytest.raises(ValueError, match="port from 1 to 65535"):
        NodeConfig(redis_cluster=["10.0.0.1:70000"])


def test_the_setting_in_a_file_and_what_http_tasks_may_not_call(tmp_path: Path, node: Callable[..., Ended]) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("redis_cluster: [10.0.0.1:6379, 10.0.0.2:6379]\netcd_endpoints: [10.0.0.9:2379]\n")
    loaded = NodeConfig.load(config)
    assert loaded.redis_cluster == ["10.0.0.1:6379", "10.0.0.2:6379"] and loaded.redis_url == ""
    assert loaded.infrastructure == ["10.0.0.9:2379", "10.0.0.1:6379", "10.0.0.2:6379"]
    assert NodeConfig().redis_url == DEFAULT_REDIS_URL   # neither given: one Redis on this host, as before
    assert NodeConfig(redis_sentinels=["10.0.0.1:26379"]).redis_url == DEFAULT_REDIS_URL
    # acknowledged writes wait for a replica of the master that took them (replication.ShardedBarrier)
    assert NodeConfig.load(config).redis_min_replicas == 0
    assert NodeConfig(redis_cluster=["10.0.0.1:6379"], redis_min_replicas=1).redis_min_replicas == 1


def test_sentinels_and_a_url_are_not_given_together(tmp_path: Path, node: Callable[..., Ended]) -> None:
    """A node given both used the Sentinels and ignored the URL without a word."""
    config = tmp_path / "node.yaml"
    config.write_text("redis_url: redis://10.0.0.5:6379/0\n")
    both = node("--config", str(config), "--redis-sentinels", "127.0.0.1:26379")
    assert both.returncode == 2 and "redis_sentinels and redis_url are both given" in both.stderr
    assert "Traceback" not in both.stderr
    with pytest.raises(ValueError, match="redis_sentinels and redis_url are both given"):
        NodeConfig(redis_sentinels=["10.0.0.1:26379"], redis_url="redis://10.0.0.5:6379/0")

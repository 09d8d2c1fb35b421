"""How a node is told where Redis is: one way of three. The setting `redis_cluster` (`--redis-cluster`) is
accepted and checked, but a node given it refuses to start until the partitioned layout of the state exists
(issue 23); Sentinels and a URL are not given together either."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.procs import free_port
from orchestrator.cli import main
from orchestrator.config import DEFAULT_REDIS_URL, NodeConfig

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


def test_a_node_given_a_redis_cluster_refuses_to_start_until_issue_23() -> None:
    refused = subprocess.run([sys.executable, "-m", "orchestrator.cli", *node_argv("--redis-cluster", SEEDS)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "cannot keep its state on a Redis Cluster yet" in refused.stderr and "issue 23" in refused.stderr
    assert "Traceback" not in refused.stderr


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
    refused = node("--config", str(config))
    assert refused.returncode == 2 and "issue 23" in refused.stderr


def test_sentinels_and_a_url_are_not_given_together(tmp_path: Path, node: Callable[..., Ended]) -> None:
    """A node given both used the Sentinels and ignored the URL without a word."""
    config = tmp_path / "node.yaml"
    config.write_text("redis_url: redis://10.0.0.5:6379/0\n")
    both = node("--config", str(config), "--redis-sentinels", "127.0.0.1:26379")
    assert both.returncode == 2 and "redis_sentinels and redis_url are both given" in both.stderr
    assert "Traceback" not in both.stderr
    with pytest.raises(ValueError, match="redis_sentinels and redis_url are both given"):
        NodeConfig(redis_sentinels=["10.0.0.1:26379"], redis_url="redis://10.0.0.5:6379/0")

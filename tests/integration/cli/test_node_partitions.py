"""A node settles the number of partitions of its cluster's state before it serves (issue 23): a new
state gets the node's `redis_partitions` (64 unless set); a node set to another number than the state
was created with, or one finding the layout from before partitions, exits with the reason."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from devtools.procs import free_port
from orchestrator.config import NodeConfig
from orchestrator.store.redis.keys import Keys, cluster_prefix


def start_node(redis_url: str, cluster: str, config: Path) -> subprocess.CompletedProcess[str]:
    """`orchestrator node` in a process of its own; these starts all end before etcd is needed."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "node", "--config", str(config),
                           "--node-id", "parts", "--listen", f"127.0.0.1:{free_port()}", "--http-listen", "",
                           "--etcd", f"127.0.0.1:{free_port()}", "--cluster", cluster, "--redis-url", redis_url],
                          capture_output=True, text=True, timeout=60)


def test_a_node_set_to_another_number_of_partitions_than_stored_exits_with_the_reason(
        tmp_path: Path, redis_server: Any) -> None:
    cluster = f"parts{uuid.uuid4().hex[:6]}"
    keys = Keys(cluster_prefix(cluster))
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as raw:
        raw.set(keys.partition_count, 64)   # the state was created with 64
        config = tmp_path / "node.yaml"
        config.write_text("redis_partitions: 16\n")
        refused = start_node(redis_server.url, cluster, config)
        assert refused.returncode == 2, refused.stderr
        assert "created with 64 partitions" in refused.stderr and "Traceback" not in refused.stderr
        assert raw.get(keys.partition_count) == "64"


def test_a_node_finding_the_state_of_before_partitions_exits_and_changes_nothing(
        tmp_path: Path, redis_server: Any) -> None:
    cluster = f"parts{uuid.uuid4().hex[:6]}"
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as raw:
        raw.set(f"{cluster_prefix(cluster)}:epoch", 3)   # a key of the unpartitioned layout
        config = tmp_path / "node.yaml"
        config.write_text("log_level: INFO\n")
        refused = start_node(redis_server.url, cluster, config)
        assert refused.returncode == 2, refused.stderr
        assert "layout from before partitions" in refused.stderr and "Traceback" not in refused.stderr
        assert raw.exists(Keys(cluster_prefix(cluster)).partition_count) == 0


def test_the_setting_is_checked_when_read() -> None:
    assert NodeConfig(redis_partitions=16).redis_partitions == 16
    with pytest.raises(ValueError, match="redis_partitions must be from 1 to 4096"):
        NodeConfig(redis_partitions=5000)

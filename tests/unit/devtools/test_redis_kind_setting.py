"""`make cluster REDIS=cluster` (ORCHESTRATOR_REDIS): the local cluster's nodes on a Redis Cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.local_cluster import CLUSTER_MASTERS, REDIS_KIND_ENV, ClusterSettings


def settings_of(tmp_path: Path, text: str = "name: kinds\n") -> ClusterSettings:
    config = tmp_path / "cluster.yaml"
    config.write_text(text)
    return ClusterSettings.load(config)


def test_redis_cluster_sets_three_masters_and_one_keeps_one_redis(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_of(tmp_path).redis_cluster_masters == 0   # as before: one Redis
    monkeypatch.setenv(REDIS_KIND_ENV, "cluster")
    assert settings_of(tmp_path).redis_cluster_masters == CLUSTER_MASTERS == 3
    monkeypatch.setenv(REDIS_KIND_ENV, "one")
    assert settings_of(tmp_path, "redis_cluster_masters: 3\n").redis_cluster_masters == 0
    monkeypatch.setenv(REDIS_KIND_ENV, "sharded")
    with pytest.raises(ValueError, match="neither 'one' nor 'cluster'"):
        settings_of(tmp_path)


def test_a_redis_cluster_is_three_masters_at_least_and_no_sentinel_replicas() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        ClusterSettings(redis_cluster_masters=2)
    with pytest.raises(ValueError, match="without redis_replicas"):
        ClusterSettings(redis_cluster_masters=3, redis_replicas=1)

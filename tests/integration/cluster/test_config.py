"""The configuration files in deploy/ load, and bad settings are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.core.auth import Tokens
from orchestrator.config import NodeConfig
from devtools.local_cluster import ClusterSettings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_deploy_files_load():
    single = NodeConfig.load(DEPLOY / "node.yaml")
    assert single.advertise == "127.0.0.1:50051" and single.redis_sentinels == []
    production = NodeConfig.load(DEPLOY / "production/node.yaml")
    assert len(production.redis_sentinels) == 3 and len(production.etcd_endpoints) == 3
    assert production.tokens_file.endswith("tokens.yaml")
    example = Tokens.from_document(yaml.safe_load((DEPLOY / "production/tokens.yaml").read_text()))
    assert len(example) == 6
    assert {p.namespace for p in example._by_digest.values()} == {None, "shop"}   # two of them confined
    local = ClusterSettings.load(DEPLOY / "local-cluster.yaml")
    assert local.node_ports == [50051, 50052, 50053] and local.etcd_members == 3


def test_flags_override_the_file_and_unknown_settings_are_refused(tmp_path: Path):
    assert NodeConfig.load(DEPLOY / "node.yaml", listen="127.0.0.1:6000").listen == "127.0.0.1:6000"
    bad = tmp_path / "bad.yaml"
    bad.write_text("node_id: x\nlease_tll_s: 2\n")
    with pytest.raises(ValueError, match=r"unknown setting.*lease_tll_s"):
        NodeConfig.load(bad)
    with pytest.raises(ValueError, match="max_payload_bytes"):
        NodeConfig(max_payload_bytes=10, max_message_bytes=5)


def test_the_infrastructure_http_tasks_may_not_call_is_named_without_schemes() -> None:
    config = NodeConfig(etcd_endpoints=["http://10.0.0.1:2379", "10.0.0.2:2379"], redis_url="rediss://10.0.0.3:6380/0")
    assert config.infrastructure == ["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:6380"]

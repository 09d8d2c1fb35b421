"""`orchestrator cluster status|step-down`: who leads, and asking the leader to resign."""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.text import Text

from ..client import connect
from ..command import add, group
from ..views.cluster import cluster_view
from ..views.format import clock


def add_cluster_commands(commands: Any) -> None:
    cluster = group(commands, "cluster", "the cluster")
    add(cluster, "status", "who leads, since when, with which epoch; the members", _status, view=cluster_view)
    add(cluster, "step-down", "ask the leader to resign; another member takes over", _step_down,
        view=lambda out: Text(out["detail"]))


def _status(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    status = client.cluster_status()
    elected = int(status.get("elected_at_ms", 0))
    if elected:
        status["elected_at"] = clock(elected)
        status["leading_for_s"] = round(time.time() - elected / 1000, 1)
    return dict(status)


def _step_down(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    leader = client.cluster_status().get("leader_address")
    if not leader:
        return {"detail": "no leader right now"}
    with_leader = connect([leader], args)
    try:
        return {"detail": with_leader.step_down()}
    finally:
        with_leader.close()

"""The `orchestrator` CLI, run as a user runs it (a subprocess), against a real node and worker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import EXAMPLES, BackgroundWorker, load_example_handlers, wait_for_status
from worker import Worker


def cli(node, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--endpoints", node.endpoint, *args],
                          capture_output=True, text=True, timeout=60)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def cli_json(node, *args: str):
    return json.loads(cli(node, *args).stdout)


@pytest.fixture(scope="module")
def registered(node):
    cli(node, "taskdef", "register", str(EXAMPLES / "task_defs.json"))
    for name in ("trip_saga", "order_routing", "parallel_quotes", "ship_each", "retry_until", "approval"):
        cli(node, "workflowdef", "register", str(EXAMPLES / f"{name}.yaml"))
    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=load_example_handlers()))
    yield node
    background.stop()


def test_definitions_from_files(registered, tmp_path: Path):
    listed = cli_json(registered, "taskdef", "list")
    assert {"book_flight", "cancel_hotel", "ship"} <= {d["name"] for d in listed}
    assert cli_json(registered, "workflowdef", "get", "trip_saga")["version"] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntasks:\n  - {name: ghost, taskReferenceName: g}\n")
    report = cli_json(registered, "workflowdef", "validate", str(bad))
    assert any("no task definition named 'ghost'" in e for e in report[f"{bad}:bad"])
    refused = cli(registered, "workflowdef", "register", str(bad), ok=False)
    assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr


def test_start_and_wait_get_search(registered):
    before = int(time.time() * 1000)
    done = cli_json(registered, "workflow", "start", "order_routing", "--input", '{"price": 2, "qty": 3}',
                    "--wait", "20")
    assert done["status"] == "COMPLETED" and done["output"]["total"] == 6
    shown = cli_json(registered, "workflow", "get", done["workflow_id"])
    assert [t["key"] for t in shown["tasks"]][:2] == ["currency", "total"]
    found = cli_json(registered, "workflow", "search", "--name", "order_routing", "--status", "COMPLETED",
                     "--from-ms", str(before))
    assert done["workflow_id"] in [w["workflow_id"] for w in found["workflows"]]
    missing = cli(registered, "workflow", "get", "nope", ok=False)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_signal_pause_resume_skip_and_watch(registered):
    started = cli_json(registered, "workflow", "start", "approval", "--input", '{"traveller": "gus", "to": "Oslo"}')
    workflow_id = started["workflow_id"]
    assert cli_json(registered, "workflow", "pause", workflow_id)["status"] == "PAUSED"
    assert cli_json(registered, "workflow", "resume", workflow_id)["status"] == "RUNNING"
    deadline = time.monotonic() + 10
    while not any(t["key"] == "approve" for t in registered.client.get_workflow(workflow_id)["tasks"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cli(registered, "workflow", "signal", workflow_id, "approve", "--output", '{"by": "cli", "approved_amount": 5}')
    watched = cli(registered, "workflow", "watch", workflow_id).stdout.strip().splitlines()
    assert watched[-1].split()[1] == "COMPLETED:"
    assert registered.client.get_workflow(workflow_id)["output"]["approved_by"] == "cli"

    other = cli_json(registered, "workflow", "start", "approval", "--input", '{"traveller": "h", "to": "Rome"}')
    cli(registered, "workflow", "skip", other["workflow_id"], "approve")
    assert wait_for_status(registered.client, other["workflow_id"], "COMPLETED")


def test_terminate_compensate_retry_restart_rerun(registered):
    saga = cli_json(registered, "workflow", "start", "trip_saga", "--input",
                    '{"traveller": "ida", "to": "Nice", "amount": 99999}', "--wait", "20")
    assert saga["status"] == "COMPENSATED"
    restarted = cli_json(registered, "workflow", "restart", saga["workflow_id"])
    assert restarted["status"] == "RUNNING"
    assert wait_for_status(registered.client, saga["workflow_id"], "COMPENSATED")

    routed = cli_json(registered, "workflow", "start", "order_routing", "--input", '{"price": 1, "qty": 1}',
                      "--wait", "20")
    cli(registered, "workflow", "rerun", routed["workflow_id"], "total", "--input", '{"price": 5, "qty": 5}')
    assert wait_for_status(registered.client, routed["workflow_id"], "COMPLETED")["output"]["total"] == 25
    refused = cli(registered, "workflow", "retry", routed["workflow_id"], ok=False)
    assert "FAILED_PRECONDITION" in refused.stderr

    waiting = cli_json(registered, "workflow", "start", "approval", "--input", '{"traveller": "j", "to": "Bonn"}')
    stopped = cli_json(registered, "workflow", "terminate", waiting["workflow_id"], "--reason", "no longer needed",
                       "--compensate")
    assert stopped["status"] in ("COMPENSATING", "COMPENSATED")


def test_cluster_status(registered):
    status = cli_json(registered, "cluster", "status")
    assert status["role"] == "LEADER" and status["leading_for_s"] >= 0

"""The README's grpcurl examples, run with a real grpcurl binary against a real node."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import register_sequence, unique, wait_for_status

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
pytestmark = pytest.mark.skipif(GRPCURL is None, reason="grpcurl is installed by `make test` (dev extra)")


def grpcurl(endpoint: str, method: str = "list", data: str | None = None) -> subprocess.CompletedProcess[str]:
    assert GRPCURL is not None   # the module is skipped without it
    options = ["-d", data] if data is not None else []
    return subprocess.run([GRPCURL, "-plaintext", *options, endpoint, method],
                          capture_output=True, text=True, timeout=30)


def test_grpcurl_lists_services_through_reflection(node):
    listed = grpcurl(node.endpoint)
    assert listed.returncode == 0, listed.stderr
    assert {"orchestrator.v1.WorkflowService", "grpc.health.v1.Health"} <= set(listed.stdout.split())


def test_grpcurl_starts_a_workflow_and_reads_errors(node):
    name = unique("wf")
    register_sequence(node.client, name, [unique("t")])
    started = grpcurl(node.endpoint, "orchestrator.v1.WorkflowService/StartWorkflow",
                      json.dumps({"name": name, "input": {"n": 3}}))
    assert started.returncode == 0, started.stderr
    workflow_id = json.loads(started.stdout)["workflow_id"]
    assert wait_for_status(node.client, workflow_id, "RUNNING")["input"] == {"n": 3}
    missing = grpcurl(node.endpoint, "orchestrator.v1.WorkflowService/GetWorkflow", '{"workflow_id": "nope"}')
    assert missing.returncode != 0 and "NotFound" in missing.stderr and "no workflow with id 'nope'" in missing.stderr
    health = grpcurl(node.endpoint, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout)["status"] == "SERVING"

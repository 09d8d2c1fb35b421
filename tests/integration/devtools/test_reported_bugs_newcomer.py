"""Rough edges a new user hit in the first hour (issue 8), each on real processes.

- a second node on a taken port shared it (gRPC's SO_REUSEPORT) instead of refusing to start;
- the local cluster shared a Redis port something else already answered on;
- `make cluster` sometimes listed two of its three members, and a restart over the Redis of
  an earlier run logged alarming "fenced off" warnings (new etcd, old epoch in Redis);
- `examples/worker.py` could not run as a script; example, demo and README workers served
  the same task type with different behaviour.
"""

from __future__ import annotations

import ast
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.local_cluster import start_node
from devtools.procs import ProcessError, free_port, start_redis
from helpers import EXAMPLES

ROOT = Path(__file__).resolve().parents[3]


def test_a_second_node_on_a_taken_port_refuses_to_start(tmp_path: Path, etcd: Any, redis_server: Any) -> None:
    port = free_port()
    common = {"port": port, "redis_url": redis_server.url, "etcd_endpoints": etcd.endpoints,
              "cluster": "porttest", "lease_ttl_s": 2.0}
    first = start_node(tmp_path, node_id="first", **common)
    try:
        # start_node waits for the second node itself to listen (the first's port does not pass for it)
        with pytest.raises(ProcessError, match=r"second \(pid \d+\) exited with status 2") as refused:
            start_node(tmp_path, node_id="second", **common)
        assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in str(refused.value)
        assert "Traceback" not in str(refused.value)
        assert first.alive()
    finally:
        first.stop()


def test_the_local_cluster_refuses_a_redis_port_that_something_answers_on(tmp_path: Path) -> None:
    existing = start_redis(tmp_path / "existing")
    try:
        with pytest.raises(ProcessError, match=f"port {existing.port} .* already in use"):
            start_redis(tmp_path / "ours", port=existing.port)
        assert existing.process.alive()
    finally:
        existing.stop()


def _run_local_cluster(tmp_path: Path, config: Path) -> tuple[str, Path]:
    """`python -m devtools cluster` (what `make cluster` runs) until it is ready; then Ctrl-C."""
    run_dir = tmp_path / "cluster"
    proc = subprocess.Popen([sys.executable, "-m", "devtools", "cluster", "--config", str(config),
                             "--dir", str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    output = "".join(lines)
    assert "Ctrl-C stops everything" in output, output
    return output, run_dir


def test_make_cluster_lists_every_member_and_restarts_over_old_data_quietly(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({"name": "newcomer", "etcd_members": 1, "redis_port": free_port(),
                                      "node_ports": [0, 0, 0], "workers": 1, "lease_ttl_s": 2.0}))
    first, run_dir = _run_local_cluster(tmp_path, config)
    assert len(re.findall(r"^  member node-\d ", first, re.M)) == 3, first
    assert "demo: COMPLETED" in first
    # The second run keeps Redis (its AOF, with the first run's epoch) and starts a new etcd.
    second, _ = _run_local_cluster(tmp_path, config)
    assert len(re.findall(r"^  member node-\d ", second, re.M)) == 3, second
    assert "demo: COMPLETED" in second
    logs = "".join(p.read_text() for p in (run_dir / "logs").glob("node-*.log"))
    assert "fenced off" not in logs and "newer than this node's term" not in logs


def test_the_example_worker_runs_as_a_script() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "example_worker.py"), "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--endpoints" in result.stdout


def _served_types(path: Path) -> set[str]:
    """The task types a Python file serves with `@task("...")`."""
    tree = ast.parse(path.read_text())
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "task"
            and node.args and isinstance(node.args[0], ast.Constant)}


def _readme_snippet_types() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    return set(re.findall(r'@task\("([^"]+)"\)', readme))


def test_example_demo_and_readme_workers_serve_distinct_task_types() -> None:
    examples = _served_types(EXAMPLES / "example_worker.py")
    demo = _served_types(ROOT / "worker" / "demo.py")
    readme = _readme_snippet_types()
    assert examples and demo and readme
    assert not examples & demo and not examples & readme and not demo & readme
    # and each set of definitions is served by its own worker
    example_defs = {d["name"] for d in json.loads((EXAMPLES / "task_defs.json").read_text())}
    demo_defs = {d["name"] for d in json.loads((ROOT / "deploy" / "demo" / "task_defs.json").read_text())}
    assert example_defs <= examples and demo_defs <= demo

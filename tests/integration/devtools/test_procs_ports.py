"""Ports of the dev tools (issue 18): a range to keep them in, a started server that is really the one
listening, and no port beyond 65535 for a node.

- ORCHESTRATOR_PORT_RANGE=LOW-HIGH keeps every port free_port() hands out, hence every port of a
  local cluster, tests and benchmarks, in that range;
- wait_for_port(..., proc) waits for *that* process to listen: a port someone else took does
  not pass for the server it started (start_node then reports the node's own refusal);
- a node refuses a port above 65535 (it would wrap round to 16 bits: 66051 is port 515).
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devtools import procs
from devtools.local_cluster import ClusterSettings, LocalCluster, start_node
from devtools.procs import ProcessError, free_port, start_redis
from orchestrator.config import NodeConfig

ROOT = Path(__file__).resolve().parents[3]


def _a_range(size: int) -> tuple[int, int]:
    """A range of `size` ports below the OS's ephemeral range, different for each run."""
    low = random.randrange(20000, 30000 - size)
    return low, low + size - 1


def _listening_ports(pid: int) -> set[int]:
    """Every TCP port process `pid` listens on, read from /proc (what the kernel says, not what we asked)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[9]) in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_free_port_keeps_to_the_range_of_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    low, high = _a_range(40)
    monkeypatch.setenv("ORCHESTRATOR_PORT_RANGE", f"{low}-{high}")
    ports = [procs.free_port() for _ in range(30)]
    assert all(low <= port <= high for port in ports), ports
    assert len(set(ports)) == len(ports)   # none handed out twice before the range has gone round
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_range_that_is_no_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for wrong in ("20000", "30000-20000", "80-90", "20000-70000", "a-b"):
        monkeypatch.setenv("ORCHESTRATOR_PORT_RANGE", wrong)
        with pytest.raises(procs.ProcessError, match="ORCHESTRATOR_PORT_RANGE"):
            procs.free_port()


def test_every_port_of_a_local_cluster_is_in_the_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    low, high = _a_range(500)
    monkeypatch.setenv("ORCHESTRATOR_PORT_RANGE", f"{low}-{high}")
    settings = ClusterSettings(name="inrange", etcd_members=1, node_ports=[0, 0, 0], workers=0, log_level="WARNING")
    with LocalCluster(tmp_path, settings).start(workers=False) as cluster:
        assert cluster.etcd is not None and cluster.redis is not None
        processes = [*(m.process for m in cluster.etcd.members), cluster.redis.process, *cluster.nodes.values()]
        listening = {proc.name: _listening_ports(proc.pid) for proc in processes if proc is not None}
    assert all(listening.values()) and len(listening) == 5, listening
    outside = {name: sorted(p for p in ports if not low <= p <= high) for name, ports in listening.items()}
    assert not any(outside.values()), f"ports outside {low}-{high}: {outside}"


def test_wait_for_port_does_not_take_another_listener_for_the_process_it_started(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        sleeper = procs.ManagedProcess("never-listens", [sys.executable, "-c", "import time; time.sleep(60)"],
                                       tmp_path)
        try:
            with pytest.raises(procs.ProcessError, match=f"127.0.0.1:{port} is served by another process, "
                                                         f"pid {os.getpid()} .* not by never-listens"):
                procs.wait_for_port("127.0.0.1", port, timeout=1.0, proc=sleeper)
        finally:
            sleeper.stop()


def test_wait_for_port_accepts_the_process_it_started(tmp_path: Path) -> None:
    port = procs.free_port()
    code = f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(1); time.sleep(60)"
    server = procs.ManagedProcess("listens", [sys.executable, "-c", code], tmp_path)
    try:
        procs.wait_for_port("127.0.0.1", port, timeout=10.0, proc=server)
    finally:
        server.stop()


def test_the_local_cluster_refuses_a_redis_port_that_something_answers_on(tmp_path: Path) -> None:
    """The local cluster shared a Redis port something else already answered on (issue 8)."""
    existing = start_redis(tmp_path / "existing")
    try:
        with pytest.raises(ProcessError, match=f"port {existing.port} .* already in use"):
            start_redis(tmp_path / "ours", port=existing.port)
        assert existing.process.alive()
    finally:
        existing.stop()


def test_a_node_started_on_a_taken_port_is_reported_failed_not_started(tmp_path: Path, etcd: Any,
                                                                         redis_server: Any) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        with pytest.raises(procs.ProcessError, match=f"cannot listen on 127.0.0.1:{port}: the address is in use"):
            start_node(tmp_path, node_id="late", port=port, redis_url=redis_server.url,
                       etcd_endpoints=etcd.endpoints, cluster="latecomer", lease_ttl_s=2.0)


def test_a_second_node_on_a_taken_port_refuses_to_start(tmp_path: Path, etcd: Any, redis_server: Any) -> None:
    """A second node on a taken port shared it (gRPC's SO_REUSEPORT) instead of refusing to start
    (issue 8)."""
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


def test_a_node_refuses_a_port_beyond_65535() -> None:
    with pytest.raises(ValueError, match=re.escape("http_listen 127.0.0.1:66051: port 66051 is beyond 65535")):
        NodeConfig(listen="127.0.0.1:65051", http_listen="127.0.0.1:66051")
    with pytest.raises(ValueError, match=re.escape("listen 127.0.0.1:70000: port 70000 is beyond 65535")):
        NodeConfig(listen="127.0.0.1:70000")
    assert NodeConfig(listen="127.0.0.1:65051").http_listen == ""   # no room for the default: no console


def test_the_node_command_exits_on_a_console_port_beyond_65535(tmp_path: Path, etcd: Any, redis_server: Any) -> None:
    node = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "node", "--node-id", "wraps",
                             "--listen", f"127.0.0.1:{procs.free_port()}", "--http-listen", "127.0.0.1:66051",
                             "--redis-url", redis_server.url, "--etcd", ",".join(etcd.endpoints),
                             "--cluster", "wraps"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = node.communicate(timeout=30)
    finally:
        if node.poll() is None:   # before the fix it served a console on port 515 and ran on
            node.kill()
            node.wait()
    assert node.returncode == 2, (out, err)
    assert err.strip() == "error: http_listen 127.0.0.1:66051: port 66051 is beyond 65535, the highest TCP port"


def test_local_cluster_settings_refuse_node_ports_without_room_for_their_console() -> None:
    with pytest.raises(ValueError, match="node_ports: 65051 leaves no room for its console"):
        ClusterSettings(node_ports=[65051, 65052, 65053])
    with pytest.raises(ValueError, match="70000 is not a port"):
        ClusterSettings(redis_port=70000)
    settings = ClusterSettings(node_ports=[65051, 65052, 65053], console_ports=[21051, 21052, 21053])
    assert settings.console_ports == [21051, 21052, 21053]

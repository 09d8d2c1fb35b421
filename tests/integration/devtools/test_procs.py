"""procs: real Redis and etcd processes on loopback, always ended by PID."""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import pyetcd
import pytest
import redis

from devtools import procs


def test_free_port_is_bindable():
    port = procs.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_managed_process_pause_resume_stop_and_tail(tmp_path: Path):
    proc = procs.ManagedProcess("sleeper", [sys.executable, "-c",
                                            "import time; print('hello', flush=True); time.sleep(60)"], tmp_path)
    try:
        assert proc.alive() and proc.pid > 0
        deadline = time.monotonic() + 5
        while "hello" not in proc.tail() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.tail(1).strip() == "hello" and proc.log_path == tmp_path / "sleeper.log"
        proc.pause()
        started = time.monotonic()
        proc.stop(timeout=2.0)  # resumes first, so SIGTERM ends it at once
        assert time.monotonic() - started < 1.5
        assert not proc.alive() and proc.returncode == -signal.SIGTERM
        proc.stop()  # idempotent
    finally:
        proc.stop()


def test_stop_escalates_to_sigkill(tmp_path: Path):
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(60)")
    proc = procs.ManagedProcess("stubborn", [sys.executable, "-c", code], tmp_path)
    deadline = time.monotonic() + 5
    while "ready" not in proc.tail() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.stop(timeout=0.3)
    assert proc.returncode == -signal.SIGKILL


def test_wait_for_port_reports_a_dead_process_with_its_log(tmp_path: Path):
    proc = procs.ManagedProcess("dies", ["sh", "-c", "echo boom-before-listening; exit 3"], tmp_path)
    try:
        with pytest.raises(procs.ProcessError, match="boom-before-listening"):
            procs.wait_for_port("127.0.0.1", procs.free_port(), timeout=5.0, proc=proc)
        with pytest.raises(procs.ProcessError, match="did not open"):
            procs.wait_for_port("127.0.0.1", procs.free_port(), timeout=0.2)
    finally:
        proc.stop()


def test_redis_restart_keeps_aof_data(tmp_path: Path):
    server = procs.start_redis(tmp_path / "redis")
    try:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.set("wf:1", "started")
        client.hset("{wf:2}", mapping={"state": "RUNNING", "epoch": "7"})
        client.close()
        old_pid, port = server.process.pid, server.port
        server.restart()
        assert server.process.pid != old_pid and server.port == port
        client = redis.Redis.from_url(server.url)
        assert client.get("wf:1") == b"started"
        assert client.hgetall("{wf:2}") == {b"state": b"RUNNING", b"epoch": b"7"}
        client.close()
    finally:
        server.stop()
    assert not server.process.alive()


def test_etcd_member_restart_keeps_its_data(tmp_path: Path):
    cluster = procs.start_etcd_cluster(tmp_path / "etcd", size=1)
    try:
        host, port = cluster.endpoints[0].split(":")
        client = pyetcd.client(host, int(port), timeout=2.0)
        client.put("/procs/test", "kept")
        client.close()
        cluster.stop_member(0)
        assert cluster.members[0].process is not None   # stopped, not forgotten
        assert not cluster.members[0].process.alive()
        cluster.start_member(0)
        client = pyetcd.client(host, int(port), timeout=2.0)
        assert client.get("/procs/test")[0] == b"kept"
        client.close()
    finally:
        cluster.stop()
    assert all(not m.process.alive() for m in cluster.members if m.process)

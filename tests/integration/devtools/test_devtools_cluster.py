"""`make cluster` (python -m devtools cluster) as a new user meets it (issue 18), on real processes.

- a second `make cluster` checks its run folder's lock and every port before it touches anything,
  and exits with one line saying what is taken and by which running cluster: the first keeps its
  etcd data, its logs and every process;
- a port some other program holds is named with that program, and nothing starts;
- node ports that leave no room for their console (gRPC port + 1000 > 65535) are refused;
- a node that exits is noticed, with one line and the exact command that starts it again, and
  that command (`python -m devtools restart-node node-2`) brings it back on its same port.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devtools.procs import free_port
from helpers import processes_working_in

ROOT = Path(__file__).resolve().parents[3]
READY = "Ctrl-C stops everything"


class Running:
    """`python -m devtools ARGS` in the background, its output read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "devtools", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 90.0) -> re.Match[str]:
        """The first line from now on that matches `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                seen = "".join(self.seen)
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{seen}") from None
            if line is None:
                raise AssertionError(f"exited ({self.proc.wait()}) before {pattern!r}:\n{''.join(self.seen)}")
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def stop(self) -> None:
        """Ctrl-C, as a user stops it (it then stops everything it started)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _lost_a_port(output: str) -> bool:
    """Did `make cluster` exit because a port it was given is taken (before anything started)?"""
    return "already in use" in output or re.search(r"port \d+ \(.*?\) is taken by", output) is not None


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_with_room_for_its_console() -> int:
    """A free port whose gRPC port + 1000 (the node's console) is free too."""
    while True:
        port = free_port()
        if port + 1000 <= 65535 and _free(port + 1000):
            return port


def _config(folder: Path, **settings: object) -> Path:
    path = folder / f"cluster-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({"name": f"dt{uuid.uuid4().hex[:6]}", "etcd_members": 1, "redis_port": 0,
                                    "node_ports": [0, 0, 0], "workers": 0, "lease_ttl_s": 2.0, **settings}))
    return path


def _devtools(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run `python -m devtools ARGS` to its end; if it is still running at `timeout` (it started a
    cluster where it should have refused), Ctrl-C it so that it stops what it started."""
    proc = subprocess.Popen([sys.executable, "-m", "devtools", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"still running after {timeout} s:\n{out}{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def _files(folder: Path) -> dict[str, int]:
    """etcd's write-ahead log segments and database under `folder`, by path, with their inodes (a
    file deleted and made again differs). Its temporary files come and go as it runs: not those."""
    found = {}
    for path in folder.rglob("*"):
        if path.suffix == ".wal" or path.name == "db":
            try:
                found[str(path.relative_to(folder))] = path.stat().st_ino
            except FileNotFoundError:
                continue
    return found


@pytest.fixture
def first_cluster(tmp_path: Path) -> Iterator[tuple[Running, Path, Path, dict[str, int]]]:
    """A `make cluster` on fixed ports, ready: (it, its config, its run folder, node pids).

    Ports picked free here can be bound by another test's server before the cluster binds them
    (the suite runs two files at once): a start that exits naming a taken port is tried again on
    new ports, twice at most."""
    run_dir = tmp_path / "first"
    for attempt in range(3):
        config = _config(tmp_path, redis_port=free_port(),
                         node_ports=[_port_with_room_for_its_console() for _ in range(3)])
        first = Running("cluster", "--config", str(config), "--dir", str(run_dir), "--no-demo")
        try:
            pids = first.wait_for(r"# pids: (.*)").group(1)
            break
        except AssertionError:
            first.stop()
            if attempt == 2 or first.proc.returncode != 1 or not _lost_a_port("".join(first.seen)):
                raise
    try:
        first.wait_for(READY)
        yield first, config, run_dir, {name: int(pid) for name, pid in re.findall(r"(node-\d)=(\d+)", pids)}
    finally:
        first.stop()


def test_a_second_make_cluster_touches_nothing_of_the_running_one(
        first_cluster: tuple[Running, Path, Path, dict[str, int]], tmp_path: Path) -> None:
    first, config, run_dir, nodes = first_cluster
    before = _files(run_dir / "etcd")
    assert any(name.endswith(".wal") for name in before) and any(name.endswith("db") for name in before), before

    again = _devtools("cluster", "--config", str(config), "--dir", str(run_dir), "--no-demo")
    output = (again.stdout + again.stderr).strip()
    assert again.returncode == 1 and len(output.splitlines()) == 1, output
    assert f"already running in {run_dir}/ (pid {first.proc.pid}" in output
    assert "nothing was started or deleted" in output and "Traceback" not in output

    elsewhere = tmp_path / "second"   # another folder, the same ports
    other = _devtools("cluster", "--config", str(config), "--dir", str(elsewhere), "--no-demo")
    output = (other.stdout + other.stderr).strip()
    assert other.returncode == 1 and len(output.splitlines()) == 1, output
    assert f"taken by the `make cluster` running as pid {first.proc.pid} (--dir {run_dir})" in output
    for role in ("(Redis)", "(node-1 gRPC)", "(node-1 console)", "(node-3 gRPC)"):
        assert role in output
    assert not (elsewhere / "etcd").exists() and not (elsewhere / "logs").exists()

    after = _files(run_dir / "etcd")
    assert {name: before[name] for name in before} == {name: after.get(name) for name in before}
    assert first.proc.poll() is None and all(_alive(pid) for pid in nodes.values())
    from worker import WorkflowClient
    ports = yaml.safe_load(config.read_text())["node_ports"]
    with WorkflowClient([f"127.0.0.1:{port}" for port in ports]) as client:
        assert len(client.cluster_status()["members"]) == 3


def test_servers_left_running_by_a_killed_make_cluster_are_not_deleted_from_under(tmp_path: Path) -> None:
    """Its supervisor SIGKILLed, the servers of a `make cluster` run on (the lock went with it):
    the next one in the same folder names them and deletes none of their files."""
    config, run_dir = _config(tmp_path), tmp_path / "run"   # every port free: none would collide
    first = Running("cluster", "--config", str(config), "--dir", str(run_dir), "--no-demo")
    orphans: list[int] = []
    try:
        first.wait_for(READY)
        first.proc.kill()
        first.proc.wait()
        orphans = processes_working_in(run_dir)
        assert len(orphans) == 5, orphans   # etcd, Redis, three nodes
        before = _files(run_dir / "etcd")
        assert before
        again = _devtools("cluster", "--config", str(config), "--dir", str(run_dir), "--no-demo")
        output = (again.stdout + again.stderr).strip()
        assert again.returncode == 1 and len(output.splitlines()) == 1, output
        assert f"processes of an earlier `make cluster` in {run_dir}/ still run without it" in output
        kill = re.search(r"\(kill ([\d ]+)\)", output)
        assert kill, output
        named = {int(pid) for pid in kill.group(1).split()}
        assert named == set(orphans), (named, orphans)
        after = _files(run_dir / "etcd")
        assert {name: after.get(name) for name in before} == before
    finally:
        first.stop()
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_port_another_program_holds_is_named_and_nothing_starts(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        run_dir = tmp_path / "run"
        refused = _devtools("cluster", "--config", str(_config(tmp_path, redis_port=port)), "--dir", str(run_dir),
                            "--no-demo")
    output = (refused.stdout + refused.stderr).strip()
    assert refused.returncode == 1 and len(output.splitlines()) == 1, output
    assert f"port {port} (Redis) is taken by pid {os.getpid()} (" in output
    assert not (run_dir / "etcd").exists()


def test_node_ports_without_room_for_their_console_are_refused_before_anything_starts(tmp_path: Path) -> None:
    config = _config(tmp_path, node_ports=[65051, 65052, 65053])
    refused = _devtools("cluster", "--config", str(config), "--dir", str(tmp_path / "run"), "--no-demo")
    output = (refused.stdout + refused.stderr).strip()
    assert refused.returncode == 1 and len(output.splitlines()) == 1, output
    assert "node_ports: 65051 leaves no room for its console at gRPC port + 1000 (66051 is above 65535)" in output
    assert not (tmp_path / "run" / "etcd").exists()


def test_a_node_that_exits_is_noticed_and_restart_node_brings_it_back(tmp_path: Path) -> None:
    config = _config(tmp_path)
    run_dir = tmp_path / "run"
    cluster = Running("cluster", "--config", str(config), "--dir", str(run_dir), "--no-demo")
    try:
        endpoint = cluster.wait_for(r"member node-2 (127\.0\.0\.1:\d+)").group(1)
        pid = int(cluster.wait_for(r"# pids: .*node-2=(\d+)").group(1))
        cluster.wait_for(READY)
        os.kill(pid, signal.SIGKILL)
        notice = cluster.wait_for(rf"^node-2 \(pid {pid}\) was killed by SIGKILL; to start it again: (.*?)   ",
                                  timeout=10)
        command = shlex.split(notice.group(1))
        assert command[1:4] == ["-m", "devtools", "restart-node"] and command[4] == "node-2"
        restarted = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        again = re.search(rf"^node-2 is running again \(pid (\d+)\) on {endpoint}", restarted.stdout)
        assert again, restarted.stdout
        cluster.wait_for(rf"node-2 is running again \(pid {again.group(1)}\)", timeout=10)
        from worker import WorkflowClient
        with WorkflowClient([endpoint]) as client:
            deadline = time.monotonic() + 20
            while len(client.cluster_status().get("members", [])) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert client.cluster_status()["node_id"] == "node-2"
            assert len(client.cluster_status()["members"]) == 3
    finally:
        cluster.stop()
    assert cluster.proc.returncode == 0
    assert not _alive(int(again.group(1)))   # Ctrl-C stopped the restarted node too


def _run_local_cluster(tmp_path: Path, config: Path) -> tuple[str, Path]:
    """`python -m devtools cluster` (what `make cluster` runs) until it is ready; then Ctrl-C."""
    run_dir = tmp_path / "cluster"
    cluster = Running("cluster", "--config", str(config), "--dir", str(run_dir))
    try:
        cluster.wait_for(READY)
    finally:
        cluster.stop()
    output = "".join(cluster.seen)
    assert READY in output, output
    return output, run_dir


def test_make_cluster_lists_every_member_and_restarts_over_old_data_quietly(tmp_path: Path) -> None:
    """`make cluster` sometimes listed two of its three members, and a restart over the Redis of an
    earlier run logged alarming "fenced off" warnings (new etcd, old epoch in Redis) (issue 8)."""
    config = tmp_path / "cluster.yaml"
    # Every port left to `make cluster` (it picks free ones and picks again when one is lost before
    # its server binds it): a port chosen here could be taken by another test's server meanwhile.
    config.write_text(yaml.safe_dump({"name": "newcomer", "etcd_members": 1, "redis_port": 0,
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

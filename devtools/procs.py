"""Real etcd and Redis server processes on loopback, for tests, the local cluster and drills.

Every process runs in its own session (so a terminal's Ctrl-C reaches it once, through us),
writes stdout and stderr to a log file, and is stopped by its PID only: never by name.
Whatever a function here starts it also ends when a later step fails, and a process still
alive when the interpreter exits is stopped by an ``atexit`` hook as a last resort.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from collections.abc import Iterable, Sequence

__all__ = [
    "ProcessError",
    "ManagedProcess",
    "free_port",
    "wait_for_port",
    "stop_all",
    "RedisServer",
    "start_redis",
    "EtcdMember",
    "EtcdCluster",
    "start_etcd_cluster",
]

_LOOPBACK = "127.0.0.1"
_live: set[ManagedProcess] = set()  # strong refs: a forgotten process is still ended at exit


class ProcessError(RuntimeError):
    """A server process died, never opened its port, or its binary is missing."""


def free_port(host: str = _LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ProcessError(f"{name} not found on PATH; install it (make servers) and retry")
    return path


class ManagedProcess:
    """A child process whose stdout and stderr go to ``<log_dir>/<name>.log`` (appended)."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path,
                 env: dict[str, str] | None = None) -> None:
        """Start ``argv`` at once in a new session; raises OSError if it cannot be executed."""
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.argv = list(argv)
        self._log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = open(self._log_path, "ab")  # noqa: SIM115 (closed by stop())
        self._paused = False
        try:
            self._popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env)
        except BaseException:
            self._log.close()
            raise
        _live.add(self)

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, alive={self.alive()})"

    @property
    def pid(self) -> int:
        """The child's PID."""
        return self._popen.pid

    @property
    def log_path(self) -> Path:
        """The file that receives the child's stdout and stderr."""
        return self._log_path

    @property
    def returncode(self) -> int | None:
        """Exit status once the child has ended (negative: killed by that signal), else None."""
        return self._popen.poll()

    def alive(self) -> bool:
        """True while the child has not exited (a paused child is alive)."""
        return self._popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child's PID; does nothing once it has exited and been reaped."""
        if self.alive():
            self._popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the child (does not wait; call ``wait`` or ``stop`` to reap it)."""
        self.signal(signal.SIGKILL)
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP the child: it keeps its sockets but answers nothing, like a hung server."""
        self.signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused child."""
        self.signal(signal.SIGCONT)
        self._paused = False

    def wait(self, timeout: float | None = None) -> int:
        """Block until the child exits and return its status; raises subprocess.TimeoutExpired."""
        return self._popen.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; waits for the exit. Idempotent."""
        try:
            if self.alive():
                if self._paused:
                    self.resume()  # a stopped process would hold SIGTERM pending forever
                self.signal(signal.SIGTERM)
                try:
                    self._popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.kill()
                    self._popen.wait()
        finally:
            self._log.close()
            _live.discard(self)

    def tail(self, n_lines: int = 20) -> str:
        """The last ``n_lines`` lines of the log file ("" if there is none yet)."""
        try:
            with open(self._log_path, "rb") as log:
                lines = deque(log, maxlen=n_lines)
        except FileNotFoundError:
            return ""
        return b"".join(lines).decode("utf-8", "replace")


def stop_all(processes: Iterable[ManagedProcess | None], timeout: float = 5.0) -> None:
    """Stop every process (None entries are skipped), even when stopping one of them fails."""
    first_error: BaseException | None = None
    for proc in processes:
        if proc is None:
            continue
        try:
            proc.stop(timeout)
        except BaseException as exc:  # keep going: each one must be ended
            first_error = first_error or exc
    if first_error is not None:
        raise first_error


@atexit.register
def _stop_leftovers() -> None:
    stop_all(list(_live), timeout=2.0)


def _died(proc: ManagedProcess) -> ProcessError:
    return ProcessError(f"{proc.name} (pid {proc.pid}) exited with status {proc.returncode}; "
                        f"log {proc.log_path} ends with:\n{proc.tail()}")


def wait_for_port(host: str, port: int, timeout: float, proc: ManagedProcess | None = None) -> None:
    """Block until ``host:port`` accepts a TCP connection.

    Raises ProcessError (with the log tail) if ``proc`` exits first or the port stays closed.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and not proc.alive():
            raise _died(proc)
        try:
            with socket.create_connection((host, port), timeout=0.25):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            tail = f"; log {proc.log_path} ends with:\n{proc.tail()}" if proc else ""
            raise ProcessError(f"{host}:{port} did not open within {timeout:.1f}s{tail}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- Redis

def _port_is_open(port: int) -> bool:
    try:
        with socket.create_connection((_LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def _redis_pid(port: int) -> int | None:
    """The process id the Redis on ``port`` reports (INFO server), or None."""
    try:
        with socket.create_connection((_LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(b"INFO server\r\n")
            reply = b""
            while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return None
    for line in reply.decode("utf-8", "replace").splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":", 1)[1])
    return None


def _redis_ping(port: int) -> bool:
    """True once Redis answers PING (it accepts connections while still loading the AOF)."""
    try:
        with socket.create_connection((_LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One redis-server on 127.0.0.1, persisting only through its AOF in ``data_dir``."""

    data_dir: Path
    port: int
    appendonly: bool = True
    appendfsync: str = "everysec"
    replica_of: int | None = None        # the loopback port of the master this one replicates
    process: ManagedProcess = field(init=False)

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT/0"""
        return f"redis://{_LOOPBACK}:{self.port}/0"

    def _argv(self) -> list[str]:
        return [_binary("redis-server"), "--port", str(self.port), "--bind", _LOOPBACK,
                "--protected-mode", "no", "--daemonize", "no", "--logfile", "",
                "--save", "", "--dir", str(self.data_dir),
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", self.appendfsync,
                *(["--replicaof", _LOOPBACK, str(self.replica_of)] if self.replica_of else [])]

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and block until it answers PING; on failure it is stopped again.

        Refuses a port that something already answers on: otherwise the other server would
        answer our PING and the cluster would silently share it (and its data)."""
        if _port_is_open(self.port):
            raise ProcessError(f"port {self.port} on {_LOOPBACK} is already in use (another Redis, perhaps of an "
                               "earlier `make cluster` still running?); stop it or choose another redis_port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(f"redis-{self.port}", self._argv(), self.data_dir)
        try:
            wait_for_port(_LOOPBACK, self.port, timeout, self.process)
            deadline = time.monotonic() + timeout
            while not _redis_ping(self.port):
                if not self.process.alive():
                    raise _died(self.process)
                if time.monotonic() >= deadline:
                    raise ProcessError(f"redis on port {self.port} never answered PING")
                time.sleep(0.05)
            if _redis_pid(self.port) != self.process.pid:   # someone bound the port between check and start
                raise ProcessError(f"the Redis answering on port {self.port} is not the one we started "
                                   f"(pid {self.process.pid}); the port is taken")
        except BaseException:
            self.process.stop()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (Redis flushes its AOF on the way out), SIGKILL after ``timeout``."""
        self.process.stop(timeout)

    def restart(self) -> None:
        """Stop, then start again on the same port and directory, reloading the AOF."""
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis(data_dir: Path, port: int | None = None, appendonly: bool = True,
                appendfsync: str = "everysec", replica_of: int | None = None) -> RedisServer:
    """Start redis-server on a free (or the given) loopback port; blocks until it answers.
    A free port taken by someone else before Redis bound it is replaced by another (twice)."""
    for attempt in range(3):
        server = RedisServer(Path(data_dir), port or free_port(), appendonly, appendfsync, replica_of)
        try:
            server.start()
            return server
        except ProcessError as exc:
            if port is not None or attempt == 2 or ("already in use" not in str(exc) and "not the one" not in str(exc)):
                raise
    raise AssertionError("unreachable")


@dataclass
class SentinelServer:
    """One Redis Sentinel watching a loopback master (quorum 1: a test or demo setting)."""

    port: int
    process: ManagedProcess

    @property
    def address(self) -> str:
        return f"{_LOOPBACK}:{self.port}"

    def stop(self) -> None:
        self.process.stop()


def start_sentinel(data_dir: Path, master_port: int, master_name: str = "mymaster",
                   down_after_ms: int = 1000, port: int | None = None) -> SentinelServer:
    """Start `redis-server --sentinel` with a config file of its own (Sentinel rewrites it)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = data_dir / f"sentinel-{port}.conf"
    config.write_text(f"port {port}\nbind {_LOOPBACK}\ndir {data_dir}\n"
                      f"sentinel monitor {master_name} {_LOOPBACK} {master_port} 1\n"
                      f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
                      f"sentinel failover-timeout {master_name} 5000\n")
    process = ManagedProcess(f"sentinel-{port}", [_binary("redis-server"), str(config), "--sentinel"], data_dir)
    try:
        wait_for_port(_LOOPBACK, port, 10.0, process)
    except BaseException:
        process.stop()
        raise
    return SentinelServer(port, process)


# --------------------------------------------------------------------------- etcd

@dataclass
class EtcdMember:
    """One etcd member: its ports, its data directory and its current process (None if never started)."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    argv: list[str]
    process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        """host:port of its client (gRPC) listener."""
        return f"{_LOOPBACK}:{self.client_port}"


def _etcd_answers(endpoint: str) -> bool:
    """True once a linearizable read through ``endpoint`` succeeds (the cluster has a leader)."""
    import pyetcd  # lazily: procs must stay usable for Redis alone

    host, port = endpoint.rsplit(":", 1)
    client = pyetcd.client(host, int(port), timeout=1.0)
    try:
        client.get("/procs/ready")
        return True
    except Exception:
        return False
    finally:
        client.close()


@dataclass
class EtcdCluster:
    """A loopback etcd cluster of ``len(members)`` members, each with its own data directory."""

    base_dir: Path
    members: list[EtcdMember]

    @property
    def endpoints(self) -> list[str]:
        """Every member's "127.0.0.1:PORT", stopped or not."""
        return [m.endpoint for m in self.members]

    def _launch(self, member: EtcdMember) -> ManagedProcess:
        member.process = ManagedProcess(member.name, member.argv, self.base_dir)
        return member.process

    def _wait_ready(self, members: Sequence[EtcdMember], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for member in members:
            assert member.process is not None
            wait_for_port(_LOOPBACK, member.client_port, max(0.1, deadline - time.monotonic()),
                          member.process)
            while not _etcd_answers(member.endpoint):
                if not member.process.alive():
                    raise _died(member.process)
                if time.monotonic() >= deadline:
                    raise ProcessError(f"etcd member {member.name} never served a read")
                time.sleep(0.1)

    def start_all(self, timeout: float = 30.0) -> None:
        """Start every member together (they need each other for a quorum) and wait for them."""
        try:
            for member in self.members:
                self._launch(member)
            self._wait_ready(self.members, timeout)
        except BaseException:
            self.stop()
            raise

    def stop_member(self, i: int, timeout: float = 5.0) -> None:
        """Stop member ``i`` (SIGTERM, then SIGKILL); its data directory stays."""
        proc = self.members[i].process
        if proc is not None:
            proc.stop(timeout)

    def start_member(self, i: int, timeout: float = 20.0) -> None:
        """Start a stopped member again on its existing data directory (etcd then ignores
        the --initial-cluster flags and rejoins from its WAL); blocks until it serves reads."""
        member = self.members[i]
        if member.process is not None and member.process.alive():
            return
        proc = self._launch(member)
        try:
            self._wait_ready([member], timeout)
        except BaseException:
            proc.stop()
            raise

    def stop(self) -> None:
        """Stop every member that is running."""
        stop_all(m.process for m in self.members)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_etcd_cluster(base_dir: Path, size: int = 1, election_timeout_ms: int = 1000,
                       heartbeat_ms: int = 100) -> EtcdCluster:
    """Start ``size`` etcd members on free loopback ports; block until the cluster serves reads.

    Logs go to ``base_dir/<member>.log``, data to ``base_dir/<member>.etcd``. Note that etcd
    rounds a lease TTL up to ceil(1.5 * election timeout), so 1000 ms allows 2 s leases.

    A free port can be taken by another process between choosing it and binding it; a start
    that fails on a taken port is tried again on new ports (up to three times).
    """
    for attempt in range(3):
        try:
            return _start_etcd_cluster(Path(base_dir) / (f"retry{attempt}" if attempt else ""), size,
                                       election_timeout_ms, heartbeat_ms)
        except ProcessError as exc:
            if "address already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_etcd_cluster(base_dir: Path, size: int, election_timeout_ms: int, heartbeat_ms: int) -> EtcdCluster:
    base_dir.mkdir(parents=True, exist_ok=True)
    binary = _binary("etcd")
    token = f"procs-{uuid.uuid4().hex[:12]}"
    ports = [(f"m{i}", free_port(), free_port()) for i in range(size)]
    initial = ",".join(f"{name}=http://{_LOOPBACK}:{peer}" for name, _, peer in ports)
    members = []
    for name, client_port, peer_port in ports:
        data_dir = base_dir / f"{name}.etcd"
        argv = [binary, "--name", name, "--data-dir", str(data_dir),
                "--listen-client-urls", f"http://{_LOOPBACK}:{client_port}",
                "--advertise-client-urls", f"http://{_LOOPBACK}:{client_port}",
                "--listen-peer-urls", f"http://{_LOOPBACK}:{peer_port}",
                "--initial-advertise-peer-urls", f"http://{_LOOPBACK}:{peer_port}",
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", token,
                "--election-timeout", str(election_timeout_ms),
                "--heartbeat-interval", str(heartbeat_ms),
                "--logger=zap", "--log-level=warn"]
        members.append(EtcdMember(name, client_port, peer_port, data_dir, argv))
    cluster = EtcdCluster(base_dir, members)
    cluster.start_all()
    return cluster

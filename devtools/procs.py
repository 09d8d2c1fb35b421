"""Real etcd and Redis server processes on loopback, for tests, the local cluster and drills.

Every process runs in its own session (so a terminal's Ctrl-C reaches it once, through us),
writes stdout and stderr to a log file, and is stopped by its PID only: never by name.
Whatever a function here starts it also ends when a later step fails, and a process still
alive when the interpreter exits is stopped by an ``atexit`` hook as a last resort.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar
from collections.abc import Callable, Iterable, Sequence

if TYPE_CHECKING:
    import redis

__all__ = [
    "ProcessError",
    "ManagedProcess",
    "PORT_RANGE_ENV",
    "port_range",
    "free_port",
    "port_taken",
    "port_owners",
    "listens_on",
    "describe_process",
    "command_line",
    "all_pids",
    "listening_inodes",
    "socket_inodes",
    "parent_of",
    "wait_for_port",
    "lost_its_port",
    "stop_all",
    "RedisServer",
    "start_redis",
    "wait_for_replicas",
    "SentinelServer",
    "start_sentinel",
    "EtcdMember",
    "EtcdCluster",
    "start_etcd_cluster",
]

_LOOPBACK = "127.0.0.1"
_live: set[ManagedProcess] = set()  # strong refs: a forgotten process is still ended at exit


class ProcessError(RuntimeError):
    """A server process died, never opened its port, or its binary is missing."""


PORT_RANGE_ENV = "ORCHESTRATOR_PORT_RANGE"
_pick_lock = threading.Lock()
_handed_out: deque[int] = deque(maxlen=2048)   # ports given by free_port, most recent last
_range_cursor: dict[tuple[int, int], int] = {}  # per range: the offset the next search starts at


def port_range() -> tuple[int, int] | None:
    """(low, high) from ``ORCHESTRATOR_PORT_RANGE`` ("20000-29999", both included), or None when unset."""
    text = os.environ.get(PORT_RANGE_ENV, "").strip()
    if not text:
        return None
    low, sep, high = text.partition("-")
    try:
        bounds = (int(low), int(high))
    except ValueError:
        bounds = (0, 0)
    if not sep or not 1024 <= bounds[0] <= bounds[1] <= 65535:
        raise ProcessError(f"{PORT_RANGE_ENV}={text!r} is not a range of ports LOW-HIGH within 1024-65535 "
                           "(for example 20000-29999)")
    return bounds


def free_port(host: str = _LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now.

    With ``ORCHESTRATOR_PORT_RANGE=LOW-HIGH`` set, the port is in that range: each process walks
    the range from a random offset, so two test sessions rarely try the same ports, and no port
    is handed out twice before the walk has gone round. Without it the OS picks one (anywhere
    in its ephemeral range), and a port this process was given recently is not given again.
    Nothing holds the port afterwards: start the server that binds it soon, and expect to lose it
    now and then (``wait_for_port`` with its process tells a lost port from a started server).
    """
    bounds = port_range()
    with _pick_lock:
        port = _port_in_range(host, bounds) if bounds else _port_from_os(host)
        _handed_out.append(port)
        return port


def _port_from_os(host: str) -> int:
    for _ in range(64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            break
    return port


def _port_in_range(host: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    size = high - low + 1
    start = _range_cursor.setdefault(bounds, random.SystemRandom().randrange(size))
    recent = set(_handed_out)
    for avoid_recent in (True, False):   # a second round may give back a port handed out long ago
        for step in range(size):
            port = low + (start + step) % size
            if avoid_recent and port in recent:
                continue
            if _bindable(host, port) and not _listeners(port):
                _range_cursor[bounds] = (start + step + 1) % size
                return port
    raise ProcessError(f"no free port left in {PORT_RANGE_ENV}={low}-{high} on {host}")


def _bindable(host: str, port: int) -> bool:
    """True when nothing holds ``host:port`` (no listener, no socket bound to it, none in TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- who listens on a port

_PROC_NET = ("/proc/net/tcp", "/proc/net/tcp6")


def _can_see_listeners() -> bool:
    return os.path.exists(_PROC_NET[0])


def _address(hex_address: str) -> str:
    """An address of /proc/net/tcp{,6} ("0100007F", 32 hex digits for IPv6) as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(struct.pack("=I", struct.unpack(">I", raw[i:i + 4])[0]) for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, words)


def _listeners(port: int) -> dict[int, str]:
    """{socket inode: local address} of every TCP socket listening on ``port`` (Linux; {} elsewhere)."""
    found: dict[int, str] = {}
    for table in _PROC_NET:
        try:
            with open(table) as rows:
                next(rows, None)
                for row in rows:
                    fields = row.split()
                    if len(fields) < 10 or fields[3] != "0A":   # 0A: LISTEN
                        continue
                    address, _, hex_port = fields[1].rpartition(":")
                    if int(hex_port, 16) == port:
                        found[int(fields[9])] = _address(address)
        except OSError:
            continue
    return found


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds open (empty when it is gone or not ours to read)."""
    inodes: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def all_pids() -> list[int]:
    """Every process this machine shows in /proc."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def listening_inodes() -> set[int]:
    """The inodes of every listening TCP socket (Linux; empty elsewhere)."""
    found: set[int] = set()
    for table in _PROC_NET:
        try:
            with open(table) as rows:
                next(rows, None)
                found.update(int(f[9]) for f in (row.split() for row in rows) if len(f) >= 10 and f[3] == "0A")
        except OSError:
            continue
    return found


def parent_of(pid: int) -> int:
    """The parent's PID of ``pid`` (0 when it is gone or unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def port_owners(port: int) -> list[int]:
    """The PIDs of the processes that hold a socket listening on ``port`` (those this user may see)."""
    inodes = set(_listeners(port))
    if not inodes:
        return []
    return sorted(pid for pid in all_pids() if socket_inodes(pid) & inodes)


def listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` (or a process it started) listens on ``port``; None where /proc cannot tell."""
    if not _can_see_listeners():
        return None
    inodes = set(_listeners(port))
    if not inodes:
        return False
    if socket_inodes(pid) & inodes:
        return True
    return any(_descends_from(owner, pid) for owner in port_owners(port))


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(64):
        pid = parent_of(pid)
        if pid <= 1:
            return False
        if pid == ancestor:
            return True
    return False


def port_taken(port: int, host: str = _LOOPBACK) -> bool:
    """True when a server could not listen on ``host:port`` now: something listens on it (on that
    address or on every address), or holds it bound. A port left in TIME_WAIT by a server that
    stopped counts as free, as servers bind with SO_REUSEADDR."""
    conflicting = {host, "0.0.0.0", "::", f"::ffff:{host}"}
    if any(address in conflicting for address in _listeners(port).values()):
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def command_line(pid: int) -> list[str]:
    """The argv of process ``pid`` ([] when it is gone or not ours to read)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return [part.decode("utf-8", "replace") for part in cmdline.read().split(b"\0") if part]
    except OSError:
        return []


def describe_process(pid: int, width: int = 100) -> str:
    """'pid 123 (redis-server --port 6390 ...)': a process for a message of one line."""
    argv = command_line(pid)
    if not argv:
        return f"pid {pid}"
    text = " ".join(" ".join([os.path.basename(argv[0]), *argv[1:]]).split())
    return f"pid {pid} ({text if len(text) <= width else text[:width - 3] + '...'})"


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
        """Send ``sig`` to the child and its process group (it leads a session of its own, so the
        group is what it started: a wrapper such as `faketime` forks the real program, which a
        signal to the wrapper's PID alone would leave running); nothing once it has been reaped."""
        if self.alive():
            try:
                os.killpg(self._popen.pid, sig)
            except (ProcessLookupError, PermissionError):
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
            self._end_group()
        finally:
            self._log.close()
            _live.discard(self)

    def _end_group(self) -> None:
        """SIGKILL whatever of the child's process group outlived it (a wrapper's child)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signal.SIGKILL)

    def tail(self, n_lines: int = 20) -> str:
        """The last ``n_lines`` lines of the log file ("" if there is none yet)."""
        try:
            with open(self._log_path, "rb") as log:
                lines = deque(log, maxlen=n_lines)
        except FileNotFoundError:
            return ""
        return b"".join(lines).decode("utf-8", "replace")


Started = TypeVar("Started")


def first_then_side_by_side(starts: Sequence[Callable[[], Started]]) -> list[Started]:
    """Run the first of `starts` alone, then the others at once, each in a thread of its own; their
    results in order. For servers whose start blocks until they listen: a node spends about two
    seconds of it importing (2026-12-07, this 2-core machine), so three one after the other took
    three times that. The first alone keeps what came first first (the first node campaigns
    before the others and leads, as when they started one by one). Every start runs to its end;
    then the first failure is raised (what the others started is theirs to stop: their callers
    record it as they go)."""
    if not starts:
        return []
    first = starts[0]()
    with ThreadPoolExecutor(max_workers=max(1, len(starts) - 1)) as pool:
        futures = [pool.submit(start) for start in starts[1:]]
    return [first, *(future.result() for future in futures)]


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
    """Block until ``host:port`` accepts a TCP connection; with ``proc``, until that process
    itself (or a process it started) listens on it: a port someone else took in the meantime
    does not pass for the server we started.

    Raises ProcessError (with the log tail) if ``proc`` exits first or the port stays closed (or
    stays another process's).
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and not proc.alive():
            raise _died(proc)
        if proc is not None and _can_see_listeners():
            if listens_on(proc.pid, port):
                return
        else:
            try:
                with socket.create_connection((host, port), timeout=0.25):
                    return
            except OSError:
                pass
        if time.monotonic() >= deadline:
            tail = f"; log {proc.log_path} ends with:\n{proc.tail()}" if proc else ""
            others = [owner for owner in port_owners(port) if proc is None or owner != proc.pid]
            if proc is not None and others:
                raise ProcessError(f"{host}:{port} is served by another process, "
                                   f"{', '.join(map(describe_process, others))}, not by {proc.name} "
                                   f"(pid {proc.pid}): the port was taken before it could bind it{tail}")
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


_SLOTS = 16384   # Redis Cluster's hash slots


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    """CLUSTER INFO as {field: value}."""
    text = str(client.execute_command("CLUSTER", "INFO"))  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@dataclass
class RedisServer:
    """One redis-server on 127.0.0.1, persisting only through its AOF in ``data_dir``."""

    data_dir: Path
    port: int
    appendonly: bool = True
    appendfsync: str = "everysec"
    replica_of: int | None = None        # the loopback port of the master this one replicates
    options: tuple[str, ...] = ()        # more redis-server arguments ("--min-replicas-to-write", "1", ...)
    # A one-server Redis Cluster owning every slot: plain clients use it as any Redis, but it refuses a
    # `#!lua` script that touches keys of two slots, and any command whose declared keys span two slots.
    slot_checked: bool = False
    cluster_bus_port: int = 0            # slot_checked: its cluster bus port (a free one, chosen at first start)
    process: ManagedProcess = field(init=False)

    def __post_init__(self) -> None:
        if self.slot_checked and self.replica_of is not None:
            raise ValueError(f"a slot-checked Redis (slot_checked=True) cannot be a replica (replica_of="
                             f"{self.replica_of}): redis-server refuses --replicaof in cluster mode")

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
                *(["--replicaof", _LOOPBACK, str(self.replica_of)] if self.replica_of else []),
                *(self._cluster_argv() if self.slot_checked else []), *self.options]

    @property
    def cluster_config_file(self) -> Path:
        """The node file a slot-checked server keeps its slots in (so a restart still owns them)."""
        return self.data_dir / f"nodes-{self.port}.conf"

    def _cluster_argv(self) -> list[str]:
        # An explicit bus port: Redis's default (port + 10000) may be taken, or above 65535.
        return ["--cluster-enabled", "yes", "--cluster-config-file", str(self.cluster_config_file),
                "--cluster-port", str(self.cluster_bus_port)]

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and block until it answers PING; on failure it is stopped again.

        Refuses a port that something already answers on: otherwise the other server would
        answer our PING and the cluster would silently share it (and its data)."""
        if _port_is_open(self.port):
            raise ProcessError(f"port {self.port} on {_LOOPBACK} is already in use (another Redis, perhaps of an "
                               "earlier `make cluster` still running?); stop it or choose another redis_port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.slot_checked and not self.cluster_bus_port:
            self.cluster_bus_port = free_port()
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
            if self.slot_checked:
                self._own_every_slot(deadline)
        except BaseException:
            self.process.stop()
            raise

    def _own_every_slot(self, deadline: float) -> None:
        """Give this server all 16,384 slots unless its node file already does (a restart), then wait
        for cluster_state:ok: until then it answers CLUSTERDOWN to every command on a key (Redis holds a
        master's state back for about a second after it starts)."""
        import redis  # lazily, as in wait_for_replicas

        client = redis.Redis(host=_LOOPBACK, port=self.port, socket_timeout=1.0, decode_responses=True)
        try:
            assigned = _cluster_info(client).get("cluster_slots_assigned", "0")
            if assigned == "0":
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, _SLOTS - 1)  # type: ignore[no-untyped-call]
            elif assigned != str(_SLOTS):
                raise ProcessError(f"the slot-checked Redis on port {self.port} owns {assigned} of {_SLOTS} slots "
                                   f"(from {self.cluster_config_file}); remove that file to start afresh")
            while (info := _cluster_info(client)).get("cluster_state") != "ok":
                if not self.process.alive():
                    raise _died(self.process)
                if time.monotonic() >= deadline:
                    raise ProcessError(f"the slot-checked Redis on port {self.port} did not reach cluster_state:ok "
                                       f"in time (cluster_state:{info.get('cluster_state')}, "
                                       f"cluster_slots_ok:{info.get('cluster_slots_ok')})")
                time.sleep(0.05)
        except redis.ConnectionError as exc:   # it died under us: say so with its log, as for PING
            if not self.process.alive():
                raise _died(self.process) from exc
            raise
        finally:
            client.close()

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
                appendfsync: str = "everysec", replica_of: int | None = None, *,
                first_port: int | None = None, options: Sequence[str] = (),
                slot_checked: bool = False) -> RedisServer:
    """Start redis-server on a free (or the given) loopback port; blocks until it answers.
    A free port taken by someone else before Redis bound it is replaced by another (twice);
    `first_port`: the free port to try first (one chosen earlier, e.g. checked with others);
    `options`: more redis-server arguments; `slot_checked`: a one-server Redis Cluster owning every
    slot (RedisServer.slot_checked), ready once it serves them all."""
    for attempt in range(3):
        chosen = port or (first_port if attempt == 0 and first_port else free_port())
        server = RedisServer(Path(data_dir), chosen, appendonly, appendfsync, replica_of, tuple(options),
                             slot_checked=slot_checked)
        try:
            server.start()
            return server
        except ProcessError as exc:
            if port is not None or attempt == 2 or not (lost_its_port(str(exc)) or "already in use" in str(exc)
                                                        or "not the one" in str(exc)):
                raise
    raise AssertionError("unreachable")


def wait_for_replicas(master_port: int, count: int, timeout: float = 20.0) -> None:
    """Block until the master on `master_port` has `count` replicas online (synced and streaming)."""
    import redis  # lazily, as pyetcd below

    client = redis.Redis(host=_LOOPBACK, port=master_port, socket_timeout=1.0, decode_responses=True)
    deadline = time.monotonic() + timeout
    online = 0
    try:
        while True:
            try:
                info = client.info("replication")
                online = sum(1 for key, value in info.items() if key.startswith("slave") and isinstance(value, dict)
                             and value.get("state") == "online")
            except redis.RedisError:
                online = 0
            if online >= count:
                return
            if time.monotonic() >= deadline:
                raise ProcessError(f"the Redis master on port {master_port} has {online} replica(s) online, not "
                                   f"{count}, after {timeout:.0f} s")
            time.sleep(0.05)
    finally:
        client.close()


@dataclass
class SentinelServer:
    """One Redis Sentinel watching a loopback master (quorum 1 by default: a test or demo setting)."""

    port: int
    process: ManagedProcess

    @property
    def address(self) -> str:
        return f"{_LOOPBACK}:{self.port}"

    def stop(self) -> None:
        self.process.stop()


def start_sentinel(data_dir: Path, master_port: int, master_name: str = "mymaster",
                   down_after_ms: int = 1000, port: int | None = None, quorum: int = 1,
                   failover_timeout_ms: int = 5000) -> SentinelServer:
    """Start `redis-server --sentinel` with a config file of its own (Sentinel rewrites it);
    `quorum`: how many Sentinels must agree that the master is down; `failover_timeout_ms` also
    bounds how soon a Sentinel points a replica that follows another address (a proxy, say)
    back at the master."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = data_dir / f"sentinel-{port}.conf"
    config.write_text(f"port {port}\nbind {_LOOPBACK}\ndir {data_dir}\n"
                      f"sentinel monitor {master_name} {_LOOPBACK} {master_port} {quorum}\n"
                      f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
                      f"sentinel failover-timeout {master_name} {failover_timeout_ms}\n")
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
                       heartbeat_ms: int = 100, *, ports: Sequence[tuple[int, int]] | None = None) -> EtcdCluster:
    """Start ``size`` etcd members on free loopback ports; block until the cluster serves reads.

    Logs go to ``base_dir/<member>.log``, data to ``base_dir/<member>.etcd``. Note that etcd
    rounds a lease TTL up to ceil(1.5 * election timeout), so 1000 ms allows 2 s leases.

    A free port can be taken by another process between choosing it and binding it; a start
    that fails on a taken port is tried again on new ports (up to three times). `ports`: the
    (client, peer) port of each member to try first (free ports chosen earlier).
    """
    if ports is not None and len(ports) != size:
        raise ValueError(f"{len(ports)} pairs of ports for {size} etcd members")
    for attempt in range(3):
        try:
            return _start_etcd_cluster(Path(base_dir) / (f"retry{attempt}" if attempt else ""), size,
                                       election_timeout_ms, heartbeat_ms, ports if attempt == 0 else None)
        except ProcessError as exc:
            if not lost_its_port(str(exc)) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def lost_its_port(error: str) -> bool:
    """Whether a start failed because another process holds the port (the start may try another)."""
    return any(sign in error for sign in ("address already in use", "Address already in use", "address is in use",
                                          "is served by another process"))


def _start_etcd_cluster(base_dir: Path, size: int, election_timeout_ms: int, heartbeat_ms: int,
                        chosen: Sequence[tuple[int, int]] | None = None) -> EtcdCluster:
    base_dir.mkdir(parents=True, exist_ok=True)
    binary = _binary("etcd")
    token = f"procs-{uuid.uuid4().hex[:12]}"
    pairs = list(chosen) if chosen is not None else [(free_port(), free_port()) for _ in range(size)]
    ports = [(f"m{i}", client, peer) for i, (client, peer) in enumerate(pairs)]
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

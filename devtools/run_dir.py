"""The run folder of `make cluster` (and of the drill): who runs in it, and requests to its supervisor.

`cluster.lock` is held (flock) by the supervising process for as long as it runs, so a lock
is never stale: the kernel lets go of it when that process ends, however it ends. Beside it,
`cluster.json` says who holds it (pid, command line, ports, each node's pid) for the messages
of a second `make cluster` and for `python -m devtools restart-node`. That command leaves a
request in `control/`; the supervisor, which owns every process of the cluster, restarts the
node with its same command line and answers in the same folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from .procs import (all_pids, command_line, describe_process, listening_inodes, parent_of, port_owners,
                    socket_inodes)

LOCK = "cluster.lock"
STATE = "cluster.json"
CONTROL = "control"


class RunDir:
    """The run folder `base` of one supervising process (`make cluster` or the drill)."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self._fd: int | None = None
        self._state: dict[str, Any] = {}

    def acquire(self, **state: Any) -> dict[str, Any] | None:
        """Take the folder: None when it is ours now (its state written), else the state of the
        process that holds it (possibly {} when it has not written one yet)."""
        self.base.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.base / LOCK, os.O_RDWR | os.O_CREAT, 0o644)   # not inherited by children
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return read_state(self.base)
        self._fd = fd
        with contextlib.suppress(FileNotFoundError):
            for stale in (self.base / CONTROL).iterdir():   # requests to an earlier supervisor
                stale.unlink()
        self.write_state(pid=os.getpid(), argv=command_line(os.getpid()) or sys.argv, dir=str(self.base),
                         started_at=time.strftime("%H:%M:%S"), **state)
        return None

    def write_state(self, **fields: Any) -> None:
        """Merge `fields` into `cluster.json` (written whole, then renamed into place)."""
        self._state.update(fields)
        part = self.base / f".{STATE}.{os.getpid()}"
        part.write_text(json.dumps(self._state, indent=1))
        part.replace(self.base / STATE)

    def release(self) -> None:
        """Let go of the folder (the state file goes: nobody runs in it any more)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.base / STATE).unlink()
        os.close(self._fd)   # releases the flock
        self._fd = None

    def requests(self) -> list[tuple[str, str]]:
        """(node id, token) of each restart asked for with `python -m devtools restart-node`."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for path in sorted((self.base / CONTROL).glob("*.request")):
                try:
                    request = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                path.unlink(missing_ok=True)
                found.append((str(request.get("node", "")), str(request.get("token", ""))))
        return found

    def answer(self, token: str, ok: bool, message: str) -> None:
        part = self.base / CONTROL / f".{token}.answer"
        part.write_text(json.dumps({"ok": ok, "message": message}))
        part.replace(self.base / CONTROL / f"{token}.answer")


def read_state(base: Path) -> dict[str, Any]:
    """What `cluster.json` says ({} when it is missing or being replaced)."""
    for _ in range(3):
        try:
            state = json.loads((Path(base) / STATE).read_text())
            return state if isinstance(state, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            time.sleep(0.05)
    return {}


def running(base: Path) -> dict[str, Any] | None:
    """The state of the process that runs in `base` now, or None when none does."""
    path = Path(base) / LOCK
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_state(base)
    finally:
        os.close(fd)   # also releases the shared lock taken when nobody held it
    return None


def ask_restart(base: Path, node_id: str, timeout_s: float) -> tuple[bool, str]:
    """Ask the supervisor running in `base` to start `node_id` again; (done, what it said)."""
    token = uuid.uuid4().hex
    control = Path(base) / CONTROL
    control.mkdir(parents=True, exist_ok=True)
    part = control / f".{token}.request"
    part.write_text(json.dumps({"node": node_id, "token": token}))
    part.replace(control / f"{token}.request")
    answer = control / f"{token}.answer"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answer.exists():
            reply = json.loads(answer.read_text())
            answer.unlink(missing_ok=True)
            return bool(reply.get("ok")), str(reply.get("message", ""))
        if running(base) is None:
            return False, f"the `make cluster` in {base}/ stopped before it answered"
        time.sleep(0.1)
    (control / f"{token}.request").unlink(missing_ok=True)
    return False, f"the `make cluster` in {base}/ did not answer within {timeout_s:g} s"


def supervisor_of(pid: int) -> int:
    """The PID of the `python -m devtools cluster|drill` that started `pid` (0 if none did)."""
    for _ in range(64):
        argv = command_line(pid)
        if "devtools" in argv and ("cluster" in argv or "drill" in argv):
            return pid
        pid = parent_of(pid)
        if pid <= 1:
            return 0
    return 0


def describe_supervisor(pid: int) -> str:
    """"the `make cluster` running as pid N (--dir D)" for a message."""
    argv = command_line(pid)
    kind = "make drill" if "drill" in argv else "make cluster"
    folder = argv[argv.index("--dir") + 1] if "--dir" in argv[:-1] else ""
    return f"the `{kind}` running as pid {pid}" + (f" (--dir {folder})" if folder else "")


def _refers_to(pid: int, base: Path) -> bool:
    """Whether process `pid` works in `base` (an absolute, resolved path): its current folder, or a
    path on its command line (relative ones taken from its current folder), is in it."""
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    if cwd.is_relative_to(base):
        return True
    for arg in command_line(pid)[1:]:
        value = arg.split("=", 1)[-1]
        if "/" in value and (cwd / value).resolve().is_relative_to(base):
            return True
    return False


def leftovers(base: Path) -> list[int]:
    """The processes serving a port that work in `base` although no supervisor holds it: servers of
    an earlier `make cluster` there whose supervisor was killed (they would be deleted from under)."""
    base = Path(base).resolve()
    listening = listening_inodes()
    found = []
    for pid in all_pids():
        if pid != os.getpid() and socket_inodes(pid) & listening and _refers_to(pid, base):
            found.append(pid)
    return found


def owner_of(port: int, base: Path) -> tuple[str, int]:
    """Who holds `port`, for a message, and the PID to stop (0 when unknown): a running `make
    cluster` (by its supervisor), a process left over from one in `base`, or any process."""
    owners = port_owners(port)
    if not owners:
        return "a process this user cannot see", 0
    owner = owners[0]
    supervisor = supervisor_of(owner)
    if supervisor:
        return describe_supervisor(supervisor), supervisor
    if _refers_to(owner, Path(base).resolve()):
        return f"processes left over from an earlier `make cluster` in {base}/", owner
    return describe_process(owner, 60), owner

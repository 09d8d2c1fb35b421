"""Running the Celery baseline: its own redis-server and a prefork worker, by PID."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools.procs import ManagedProcess, ProcessError, RedisServer, start_redis

from . import celery_app

REPO_ROOT = Path(__file__).resolve().parent.parent


class CeleryBaseline:
    """redis-server (AOF, everysec) + `celery worker --pool prefork -c <processes>`."""

    def __init__(self, processes: int = 2) -> None:
        self.processes = processes
        self.base_dir = Path(tempfile.mkdtemp(prefix="bench-celery-"))
        self.redis: RedisServer | None = None
        self.worker: ManagedProcess | None = None
        self._children: list[int] = []

    @property
    def url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    def start(self, ready_timeout_s: float = 60.0) -> CeleryBaseline:
        try:
            self.redis = _start_redis_retrying(self.base_dir / "redis")
            celery_app.configure(self.redis.url)
            env = {**os.environ, celery_app.URL_VARIABLE: self.redis.url,
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
            argv = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "--pool", "prefork",
                    "-c", str(self.processes), "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                    "--without-heartbeat", "-n", f"bench-{os.getpid()}@127.0.0.1"]
            self.worker = ManagedProcess("celery-worker", argv, self.base_dir / "logs", env=env)
            self._wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        """Run one chain end to end: the worker is up once it completes."""
        assert self.worker is not None
        result = celery_app.chain_of_three(-1)
        deadline = time.monotonic() + timeout_s
        from celery.result import AsyncResult

        while not AsyncResult(result, app=celery_app.app).ready():
            if not self.worker.alive():
                raise RuntimeError(f"celery worker exited:\n{self.worker.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"celery worker not ready within {timeout_s} s:\n{self.worker.tail()}")
            time.sleep(0.1)
        self._children = _children_of(self.worker.pid)

    def pids(self) -> dict[str, int]:
        found: dict[str, int] = {}
        if self.worker is not None and self.worker.alive():
            found["celery-main"] = self.worker.pid
            for index, pid in enumerate(_children_of(self.worker.pid)):
                found[f"celery-child-{index + 1}"] = pid
        if self.redis is not None:
            found["celery-redis"] = self.redis.process.pid
        return found

    def stop(self) -> None:
        """Warm shutdown of the worker (SIGTERM), then its pool children by PID, then Redis."""
        try:
            if self.worker is not None:
                children = set(self._children) | set(_children_of(self.worker.pid))
                self.worker.stop(timeout=10.0)
                for pid in children:
                    _kill_if_alive(pid)
            if self.redis is not None and getattr(self.redis, "process", None) is not None:
                self.redis.stop()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> CeleryBaseline:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _start_redis_retrying(data_dir: Path, attempts: int = 3) -> RedisServer:
    """start_redis on a free port, again on another one if someone else bound it first."""
    for attempt in range(1, attempts + 1):
        try:
            return start_redis(data_dir, appendonly=True, appendfsync="everysec")
        except ProcessError:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _kill_if_alive(pid: int) -> None:
    """SIGKILL a pool child left behind, if that PID is still a celery process (not a reused PID)."""
    try:
        if b"celery" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return
        os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass

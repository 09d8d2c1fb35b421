"""The machine and the versions a result was measured with."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = Path("/proc/meminfo").read_text()
    total_kb = re.search(r"^MemTotal:\s*(\d+)", meminfo, re.M)
    return {"cores": os.cpu_count(), "cpu_model": model.group(1).strip() if model else platform.processor(),
            "memory_gib": round(int(total_kb.group(1)) / 1024 / 1024, 1) if total_kb else None,
            "kernel": platform.release(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    redis_line = _first_line(["redis-server", "--version"])
    redis_version = re.search(r"v=(\S+)", redis_line)
    etcd_line = _first_line(["etcd", "--version"])
    return {"python": platform.python_version(),
            "redis_server": redis_version.group(1) if redis_version else redis_line,
            "etcd": etcd_line.removeprefix("etcd Version: "), "grpcio": _package("grpcio"),
            "redis_py": _package("redis"), "hiredis": _package("hiredis"), "uvloop": _package("uvloop"),
            "protobuf": _package("protobuf"), "celery": _package("celery"),
            "kombu": _package("kombu"), "py_spy": _package("py-spy"), "executable": sys.executable}


def source() -> dict[str, Any]:
    """The commit measured, and whether the work tree differed from it."""
    head = _first_line(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    status = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "orchestrator", "worker"],
                            capture_output=True, text=True).stdout
    import orchestrator

    return {"commit": head, "orchestrator_or_worker_modified": bool(status.strip()),
            "orchestrator_package": str(Path(orchestrator.__file__).resolve().parent)}

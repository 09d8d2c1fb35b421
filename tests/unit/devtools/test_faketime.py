"""A killed faketime wrapper leaves its /dev/shm files behind, and a later wrapper given the same
pid then fails to start ("faketime: sem_open: File exists"); CI failed that way once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devtools.faketime import remove_leftovers, sweep_leftovers


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweeping_removes_only_what_dead_wrappers_left(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getpid()
    for pid in (dead, alive):
        (tmp_path / f"faketime_shm_{pid}").write_bytes(b"x")
        (tmp_path / f"sem.faketime_sem_{pid}").write_bytes(b"x")
    (tmp_path / "unrelated_123").write_bytes(b"x")

    assert sweep_leftovers(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"faketime_shm_{alive}", f"sem.faketime_sem_{alive}", "unrelated_123"])


def test_removing_one_wrappers_files(tmp_path: Path) -> None:
    (tmp_path / "faketime_shm_42").write_bytes(b"x")
    (tmp_path / "sem.faketime_sem_42").write_bytes(b"x")
    remove_leftovers(42, tmp_path)
    remove_leftovers(42, tmp_path)   # already gone: no error
    assert list(tmp_path.iterdir()) == []

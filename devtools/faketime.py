"""Running a process with its clock shifted (Debian's `faketime`), without leaking what it leaves.

The `faketime` wrapper keeps a shared-memory segment and a semaphore named after its own pid in
/dev/shm (`faketime_shm_<pid>`, `sem.faketime_sem_<pid>`) and removes them only when it exits
cleanly. A wrapper that is killed, as tests do, leaves both behind; when the kernel later hands
the same pid to another wrapper, that one refuses to start ("faketime: sem_open: File exists").
So whoever starts a shifted process removes what dead wrappers left first, and removes its own
wrapper's files once the process has ended."""

from __future__ import annotations

import os
import re
from pathlib import Path

SHARED_MEMORY = Path("/dev/shm")
_LEFTOVER = re.compile(r"^(?:faketime_shm_|sem\.faketime_sem_)(\d+)$")


def shifted(skew: str) -> list[str]:
    """The command prefix that runs a program `skew` off the real clock, e.g. "-30s"."""
    return ["faketime", "-f", skew]


def remove_leftovers(pid: int, folder: Path = SHARED_MEMORY) -> None:
    """Remove the files a faketime wrapper with this pid left (call once it has ended)."""
    for name in (f"faketime_shm_{pid}", f"sem.faketime_sem_{pid}"):
        (folder / name).unlink(missing_ok=True)


def sweep_leftovers(folder: Path = SHARED_MEMORY) -> list[int]:
    """Remove the files of every faketime wrapper that is no longer running; returns their pids."""
    if not folder.is_dir():
        return []
    dead = sorted({int(match.group(1)) for entry in folder.iterdir()
                   if (match := _LEFTOVER.match(entry.name)) and not _running(int(match.group(1)))})
    for pid in dead:
        remove_leftovers(pid, folder)
    return dead


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

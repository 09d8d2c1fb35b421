"""Sampling profiles of running nodes with py-spy, summarised as text.

py-spy attaches to a process by PID (no change to the node) and writes collapsed
stacks (`--format raw`: `frame;frame;...;leaf count` per line, frames aggregated
per function with `--function`). With `--gil` only the thread holding the GIL is
sampled, so the percentages are shares of the process's Python work; time spent in
C with the GIL released (gRPC's core, waiting on sockets) is not counted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy_binary() -> str | None:
    """py-spy from the venv (the bench extra installs it) or from PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recording:
    """`py-spy record` on one PID in the background, for a fixed duration."""

    def __init__(self, pid: int, output: Path, duration_s: int, rate: int = 200, gil_only: bool = True) -> None:
        binary = py_spy_binary()
        if binary is None:
            raise FileNotFoundError("py-spy is not installed: pip install -e '.[bench]'")
        self.output = output
        argv = [binary, "record", "--pid", str(pid), "--duration", str(duration_s), "--rate", str(rate),
                "--format", "raw", "--function", "--nonblocking", "--output", str(output)]
        if gil_only:
            argv.append("--gil")  # only samples holding the GIL: the Python work, not waits in C
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finish(self, timeout_s: float = 60.0) -> str:
        """Wait for py-spy to write its file; returns its stderr (empty when all went well)."""
        try:
            _, err = self._process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            _, err = self._process.communicate()
        return err.decode("utf-8", "replace").strip()


@dataclass
class ProfileSummary:
    samples: int = 0
    self_counts: Counter[str] = field(default_factory=Counter)
    total_counts: Counter[str] = field(default_factory=Counter)

    def top(self, kind: str, n: int) -> list[tuple[str, float]]:
        counts = self.self_counts if kind == "self" else self.total_counts
        return [(name, 100 * count / max(self.samples, 1)) for name, count in counts.most_common(n)]

    def render(self, title: str, n: int = 30) -> str:
        lines = [title, f"{self.samples} samples", "",
                 f"top {n} by self time (% of samples with this function on top of the stack):"]
        lines += [f"  {pct:5.1f}%  {name}" for name, pct in self.top("self", n)]
        lines += ["", f"top {n} by total time (% of samples with this function anywhere on the stack):"]
        lines += [f"  {pct:5.1f}%  {name}" for name, pct in self.top("total", n)]
        return "\n".join(lines) + "\n"


def summarise(raw_path: Path) -> ProfileSummary:
    """Self and inclusive sample counts per function from a py-spy raw file."""
    summary = ProfileSummary()
    if not raw_path.exists():
        return summary
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(frame) for frame in stack.split(";") if frame and not frame.startswith("process ")]
        if not frames:
            continue
        summary.samples += count
        summary.self_counts[frames[-1]] += count
        for name in set(frames):
            summary.total_counts[name] += count
    return summary


def _name(frame: str) -> str:
    """`decide (orchestrator/engine.py:60)` -> `orchestrator/engine.py:decide`."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['file']}:{match['func']}"

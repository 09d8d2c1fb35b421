"""The small pieces every view is made of: a status in its colour, "3 s ago", "1 min 5 s", a
clock time, a payload cut to fit."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.text import Text

STATUS_STYLES = {
    "RUNNING": "bold blue", "IN_PROGRESS": "blue", "SCHEDULED": "cyan", "PAUSED": "yellow",
    "COMPENSATING": "yellow", "COMPLETED": "green", "COMPLETED_WITH_ERRORS": "yellow", "COMPENSATED": "yellow",
    "SKIPPED": "dim", "CANCELED": "dim", "FAILED": "bold red", "FAILED_WITH_TERMINAL_ERROR": "bold red",
    "TIMED_OUT": "red", "TERMINATED": "magenta", "COMPENSATION_FAILED": "bold red",
    "LEADER": "bold green", "FOLLOWER": "dim"}
STATUS_ICONS = {"COMPLETED": "✓", "COMPLETED_WITH_ERRORS": "✓", "SKIPPED": "↷", "CANCELED": "-", "FAILED": "✗",
                "FAILED_WITH_TERMINAL_ERROR": "✗", "TIMED_OUT": "✗", "IN_PROGRESS": "▶", "SCHEDULED": "○"}
PAYLOAD_CHARS = 300   # inputs and outputs in a view: compact JSON cut to this


def current_ms() -> int:
    return int(time.time() * 1000)


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def ago(ms: int, now_ms: int | None = None) -> str:
    """"3 s ago", "5 min ago", "2 h ago", "4 d ago" ("-" for no time)."""
    if not ms:
        return "-"
    seconds = ((now_ms if now_ms is not None else current_ms()) - ms) / 1000
    if seconds < 0:
        return f"in {_coarse(-seconds)}"
    return "just now" if seconds < 1 else f"{_coarse(seconds)} ago"


def _coarse(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def duration(ms: float) -> str:
    """"850 ms", "1.2 s", "42 s", "3 min 5 s", "2 h 3 min", "1 d 2 h"."""
    ms = max(ms, 0)
    if ms < 1000:
        return f"{int(ms)} ms"
    seconds = ms / 1000
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{int(seconds)} s"
    for big, big_size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60),
                                             ("min", 60, "s", 1)):
        if seconds >= big_size:
            rest = int(seconds % big_size // small_size)
            return f"{int(seconds // big_size)} {big}" + (f" {rest} {small}" if rest else "")
    return f"{int(seconds)} s"   # pragma: no cover (60 s and more is caught above)


def seconds(value: Any) -> str:
    """A definition's number of seconds as a duration ("-" for none or 0)."""
    return "-" if not value else duration(float(value) * 1000)


def clock(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def clock_and_ago(ms: int, now_ms: int | None = None) -> str:
    """"2024-05-01 09:56:55 (3 min ago)"."""
    return f"{clock(ms)} ({ago(ms, now_ms)})"


def compact(value: Any) -> str:
    text = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    return text if len(text) <= PAYLOAD_CHARS else text[:PAYLOAD_CHARS - 1] + "…"


def many(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"

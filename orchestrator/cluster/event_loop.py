"""The event loop for nodes and workers: uvloop when installed, asyncio's own otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """For `asyncio.Runner(loop_factory=...)`: both hot paths (gRPC streams, Redis replies) gain."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop

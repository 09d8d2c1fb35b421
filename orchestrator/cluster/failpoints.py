"""Failpoints: named places in a node where it can be made to die on purpose, for the tests that
prove a node SIGKILLed at any point of a step, or of a start, loses nothing (as etcd's gofail failpoints do).

`ORCHESTRATOR_FAILPOINTS=step:before-script,step:before-reply` (read once, at import) makes the node
SIGKILL itself the first time it reaches one of them. Unset, as in any real deployment, reaching a
failpoint costs one look-up in an empty set.
"""

from __future__ import annotations

import asyncio
import os
import signal

ARMED = frozenset(name for name in os.environ.get("ORCHESTRATOR_FAILPOINTS", "").split(",") if name)

STEP_BEFORE_SCRIPT = "step:before-script"     # a result decided, its STEP not sent
STEP_BEFORE_PUSH = "step:before-push"         # STEP applied (the next task handed over), nothing pushed
STEP_BEFORE_REPLY = "step:before-reply"       # STEP applied and the next task pushed, the result not acked
POINTS = (STEP_BEFORE_SCRIPT, STEP_BEFORE_PUSH, STEP_BEFORE_REPLY)
START_BEFORE_SCRIPT = "start:before-script"   # a start's first decision made (workers reserved), no script sent
START_BEFORE_PUSH = "start:before-push"       # the start and its decision applied, the first task not pushed
START_BEFORE_REPLY = "start:before-reply"     # the first task pushed, the start not answered
START_POINTS = (START_BEFORE_SCRIPT, START_BEFORE_PUSH, START_BEFORE_REPLY)


def reach(name: str) -> None:
    """Die here (SIGKILL, no clean-up) if this failpoint is armed."""
    if name in ARMED:
        os.kill(os.getpid(), signal.SIGKILL)


async def reach_after_a_while(name: str, delay_s: float = 0.2) -> None:
    """Die here if armed, after letting the event loop run `delay_s` (what is queued for the
    network, such as a task pushed to a worker, goes out first)."""
    if name in ARMED:
        await asyncio.sleep(delay_s)
        os.kill(os.getpid(), signal.SIGKILL)

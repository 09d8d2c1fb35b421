"""Keeps this node on the cluster's clock: the clock of the Redis server that holds the state.

Every second it reads Redis `TIME` a few times and anchors `core.clock` to the reading with the
shortest round trip (its error is at most half that round trip). A reading whose round trip is
longer than MAX_ROUND_TRIP_MS is not trusted and the last anchor stays. When Redis does not
answer, the last anchor stays too: time then advances at this process's monotonic rate, which
drifts by parts per million, not seconds.

A node whose own wall clock is far off Redis's is not refused: it works on Redis's time, logs
the offset once when it first exceeds WARN_OFFSET_MS (and again when it comes back), and shows
it as the metric `orchestrator_clock_offset_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..core import clock
from ..store.protocol import Store, StoreUnavailable

log = logging.getLogger(__name__)

INTERVAL_S = 1.0
SAMPLES = 3
MAX_ROUND_TRIP_MS = 250.0
WARN_OFFSET_MS = 1000.0


class ClockSync:
    def __init__(self, store: Store, *, interval_s: float = INTERVAL_S) -> None:
        self.store = store
        self.interval_s = interval_s
        self.round_trip_ms: float | None = None   # of the reading the clock is anchored to
        self._warned = False
        self._task: asyncio.Task[None] | None = None

    async def measure(self) -> bool:
        """Anchor the clock to the best of a few readings; False when none could be trusted."""
        best: tuple[float, float, float, float] | None = None   # round trip, reference, monotonic, wall
        for _ in range(SAMPLES):
            sent_mono, sent_wall = time.monotonic(), time.time()
            try:
                reference = await self.store.server_time_ms()
            except StoreUnavailable:
                return False
            back_mono = time.monotonic()
            round_trip = (back_mono - sent_mono) * 1000
            if best is None or round_trip < best[0]:
                middle = (back_mono - sent_mono) / 2
                best = (round_trip, reference, sent_mono + middle, sent_wall * 1000 + middle * 1000)
        assert best is not None
        round_trip, reference, monotonic_s, wall_ms = best
        if round_trip > MAX_ROUND_TRIP_MS:
            return False
        clock.anchor_to(reference, monotonic_s, wall_ms)
        self.round_trip_ms = round_trip
        self._report(clock.offset_ms())
        return True

    def _report(self, offset: float) -> None:
        if abs(offset) > WARN_OFFSET_MS and not self._warned:
            self._warned = True
            side = "behind" if offset > 0 else "ahead of"
            log.warning("this node's clock is %.1f s %s Redis's; every time this node stores or compares "
                        "uses Redis's clock (fix the node's NTP)", abs(offset) / 1000, side)
        elif abs(offset) <= WARN_OFFSET_MS / 2 and self._warned:
            self._warned = False
            log.info("this node's clock is within %.0f ms of Redis's again", abs(offset))

    async def start(self) -> None:
        """Measure once before the node serves (best effort: a Redis that does not answer yet
        leaves the wall clock until it does), then every `interval_s`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.measure(), timeout=2.0)
        self._task = asyncio.create_task(self._run(), name="clock-sync")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.wait_for(self.measure(), timeout=max(self.interval_s, 1.0))
            except (TimeoutError, StoreUnavailable):
                continue

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

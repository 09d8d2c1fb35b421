"""Whether an open loop held its offered rate, and the highest rate it holds (its knee).

A closed loop (N clients, each waiting for its workflow) cannot overload the system: it
slows down instead. An open loop starts workflows on a schedule whatever the system does,
so past its capacity the starts fall behind and a backlog builds up; a latency measured
there is an overload's, not the latency at the rate offered. A figure taken "at 80 % of
peak" is therefore taken at 80 % of the open loop's own peak, found by a ramp of short
steps, and each measured run is checked to have held its rate.

Pure: the ramp's steps come in as numbers, so the rules are tested on recorded figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

KEEP_UP = 0.98            # a step is held when starts and completions both reach this share of the offer
TRIM = 0.02               # the share of a run's first and of its last events a pace leaves out
RAMP_SHARES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)   # of the reference (closed-loop) peak
RESOLUTION = 0.05         # refine between the knee and the lowest failure while they differ by more
MIN_RATE = 5.0            # workflows/s: below this a ramp that never held gives up
MAX_STEPS = 16


def pace(times_s: Sequence[float], trim: float = TRIM) -> float:
    """Events per second over the middle of a run: the events between the first and the last
    `trim` of them, over the time between those two.

    Why not the count over the whole run's window: that window ends with the last event, so a
    constant latency or one late straggler (a p99 workflow finishing last) reads as falling behind
    in a short run (30 ms at the end of a 1.5 s run is 2 %), and the runs with the worst tails would
    be the ones judged not held and left out of a tail-latency figure. A backlog that builds spreads
    every later event, so it still shows: at 95 % of the offer the middle is 5 % slower too."""
    if len(times_s) < 2:
        return 0.0
    ordered = sorted(times_s)
    last = len(ordered) - 1
    low, high = int(trim * last), last - int(trim * last)
    span = ordered[high] - ordered[low]
    return (high - low) / span if span > 0 else 0.0


@dataclass(frozen=True)
class RateStep:
    """One open-loop run at a fixed offered rate, as it went."""

    offered_per_s: float
    started: int                  # start calls that returned a workflow id
    started_per_s: float          # the pace of the start calls' returns (`pace`)
    completed: int                # of those, completions seen
    completed_per_s: float        # the pace of their completions (`pace`, by the system's end times)

    def held(self, keep_up: float = KEEP_UP) -> bool:
        """Starts kept pace with the schedule, completions kept pace with the starts, and every
        start completed.

        Measured before (a 4 s step, 2 cores): rates the cluster carries kept 99.2-99.9 % of the
        offer even counted over the whole window; the first step past the closed loop's peak kept
        96 % and passed the earlier 95 %, though its backlog grew by 4 % of the offer every second.
        """
        floor = keep_up * self.offered_per_s
        return (self.started_per_s >= floor and self.completed_per_s >= floor
                and self.completed >= self.started)

    def describe(self) -> str:
        verdict = "held" if self.held() else "NOT HELD"
        return (f"offered {self.offered_per_s:g} wf/s: started {self.started_per_s:.1f}/s, "
                f"completed {self.completed_per_s:.1f}/s ({verdict})")

    def as_dict(self) -> dict[str, float | int | bool]:
        return {"offered_per_s": self.offered_per_s, "started": self.started,
                "started_per_s": round(self.started_per_s, 1), "completed": self.completed,
                "completed_per_s": round(self.completed_per_s, 1), "held": self.held()}


def lowest_failure(steps: Sequence[RateStep]) -> float | None:
    """The lowest offered rate that was not held, if any."""
    failed = [s.offered_per_s for s in steps if not s.held()]
    return min(failed) if failed else None


def knee(steps: Sequence[RateStep]) -> float | None:
    """The highest offered rate held below every rate that was not (None when none was).

    A step held above a failure is ignored: a lucky moment past the knee is not a peak.
    """
    ceiling = lowest_failure(steps)
    held = [s.offered_per_s for s in steps if s.held() and (ceiling is None or s.offered_per_s < ceiling)]
    return max(held) if held else None


def next_rate(steps: Sequence[RateStep], reference_per_s: float) -> float | None:
    """The ramp's next offered rate, or None when the knee is known well enough.

    Up through RAMP_SHARES of the reference until a step is not held; then halfway between
    the knee and that failure until they are within RESOLUTION of each other. When even the
    first step was not held, down by halves (to MIN_RATE) until one is.
    """
    if len(steps) >= MAX_STEPS:
        return None
    if not steps:
        return round(RAMP_SHARES[0] * reference_per_s, 1)
    ceiling, found = lowest_failure(steps), knee(steps)
    if ceiling is None:
        top = max(s.offered_per_s for s in steps)
        higher = [rate for rate in (round(share * reference_per_s, 1) for share in RAMP_SHARES) if rate > top]
        return higher[0] if higher else None
    if found is None:
        lower = round(ceiling / 2, 1)
        return lower if lower >= MIN_RATE else None
    if (ceiling - found) / found <= RESOLUTION:
        return None
    return round((found + ceiling) / 2, 1)


def capped(steps: Sequence[RateStep]) -> bool:
    """Every step was held: the knee is at least the highest rate offered, not the limit."""
    return bool(steps) and lowest_failure(steps) is None

"""The open loop's own peak: a ramp of short open-loop steps up to the first rate not held.

The closed loop's peak (N clients in flight, each waiting) is no rate an open loop can be
run at: at 128 in flight it counts completions of a queue kept full, and an open loop at
80 % of it was past what the cluster sustains (344 wf/s offered, 296-299 started). So the
ramp starts at a share of that peak, goes up until a step is not held, and then narrows
the gap (bench/knee.py says what is held and which rate comes next).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .knee import RateStep, capped, knee, next_rate
from .load import Completion, CompletionWatcher, OpenLoopResult, Starter, open_loop, rate_step, wait_all

DRAIN_TIMEOUT_S = 60.0   # after the last start, for the backlog of a step past the knee


@dataclass(frozen=True)
class OpenPeak:
    reference_per_s: float          # the closed loop's peak the ramp started from
    steps: list[RateStep]
    peak_per_s: float | None        # the knee: highest rate held below every rate not held
    at_least: bool                  # every step was held: the peak is higher than the ramp went

    def as_dict(self) -> dict[str, Any]:
        return {"closed_loop_peak_per_s": self.reference_per_s, "open_loop_peak_per_s": self.peak_per_s,
                "peak_is_a_lower_bound": self.at_least, "steps": [s.as_dict() for s in self.steps]}


def held_run(start: Starter, watcher: CompletionWatcher, rate: float,
             count: int) -> tuple[RateStep, OpenLoopResult, dict[str, Completion]]:
    """`count` workflows at `rate`, every completion awaited; how it went against its rate."""
    launched = open_loop(start, rate=rate, count=count, time_limit_s=count / rate + 30)
    done = wait_all(watcher, launched.ids, DRAIN_TIMEOUT_S)
    return rate_step(launched, done), launched, done


def find_open_peak(start: Starter, watcher: CompletionWatcher, reference_per_s: float, step_s: float,
                   log: Callable[[str], None] = print) -> OpenPeak:
    """Ramp steps of `step_s` seconds each (at least 20 workflows) until the knee is known."""
    steps: list[RateStep] = []
    while (rate := next_rate(steps, reference_per_s)) is not None:
        step, _, _ = held_run(start, watcher, rate, max(20, round(rate * step_s)))
        steps.append(step)
        log(f"  open-loop ramp: {step.describe()}")
    return OpenPeak(reference_per_s, steps, knee(steps), capped(steps))

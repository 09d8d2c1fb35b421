"""The timeline of an execution: one row per task attempt, drawn as a Gantt chart in HTML/CSS.

Each row has a light segment while the attempt waited (scheduled, not started) and a solid
one while it ran (started to ended, or to now), both as percentages of the execution's span.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core import state as m
from ..core import statuses as st


@dataclass
class Row:
    key: str
    attempt: int
    task_type: str
    status: str
    wait_left: float      # percent of the span
    wait_width: float
    run_left: float
    run_width: float
    title: str


MAX_ROWS = 400   # a longer run is drawn up to here (the task table lists every attempt)


@dataclass
class Timeline:
    start_ms: int
    end_ms: int
    rows: list[Row]
    ticks: list[tuple[float, str]]   # (percent, label)
    not_drawn: int = 0


def _pct(value: int, start: int, span: int) -> float:
    return max(0.0, min(100.0, (value - start) * 100.0 / span))


def _label(ms: int) -> str:
    if ms < 1000:
        return f"{ms} ms"
    if ms < 120_000:
        return f"{ms / 1000:g} s"
    return f"{ms / 60_000:g} min"


def timeline(state: m.WorkflowState, now_ms: int) -> Timeline:
    start = state.created_at_ms
    ended = state.ended_at_ms if state.status in st.TERMINAL_WORKFLOW and state.ended_at_ms else 0
    end = ended or max([now_ms, *(t.runtime.ended_at_ms for t in state.tasks)])
    span = max(1, end - start)
    rows = []
    attempts = sorted(state.tasks, key=lambda t: t.spec.seq)
    for task in attempts[:MAX_ROWS]:
        spec, runtime = task.spec, task.runtime
        scheduled = spec.scheduled_at_ms or start
        finished = runtime.ended_at_ms or (end if runtime.status in st.ACTIVE_TASK else scheduled)
        if runtime.started_at_ms:               # handed to a worker: it waited, then ran
            wait_to, run_from, run_to = runtime.started_at_ms, runtime.started_at_ms, finished
        elif runtime.status == st.SCHEDULED:    # still waiting for a worker (or its start delay)
            wait_to, run_from, run_to = finished, finished, finished
        else:                                   # a system task (WAIT, HUMAN, JOIN, ...) or cancelled unstarted
            wait_to, run_from, run_to = scheduled, scheduled, finished
        waited, ran = max(0, wait_to - scheduled), max(0, run_to - run_from)
        verb = "running for" if runtime.status in st.ACTIVE_TASK else "ran"
        title = f"{spec.key} attempt {spec.attempt}: {runtime.status}; waited {_label(waited)}, {verb} {_label(ran)}"
        left = _pct(scheduled, start, span)
        run_left = _pct(run_from, start, span)
        run_width = _pct(run_to, start, span) - run_left
        rows.append(Row(spec.key, spec.attempt, spec.task_type, str(runtime.status), left,
                        _pct(wait_to, start, span) - left, run_left,
                        max(0.5, run_width) if runtime.status != st.SCHEDULED else 0.0, title))
    step = _nice_step(span)
    ticks = [(t * 100.0 / span, _label(t)) for t in range(0, span + 1, step)]
    return Timeline(start, end, rows, ticks, max(0, len(attempts) - MAX_ROWS))


def _nice_step(span_ms: int) -> int:
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000, 120_000,
                 300_000, 600_000, 1_800_000, 3_600_000):
        if span_ms / step <= 8:
            return step
    return max(1, span_ms // 8)

"""The bench's open-loop peak (bench/knee.py) and what the latency scenario reports from it,
on the figures a run recorded: at 3ebd3ba the closed loop peaked at 430.2 wf/s, and the open loop
offered 80 % of that, 344 wf/s, started only 296-299 per second (dispatch p99 203 ms)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.knee import MIN_RATE, RAMP_SHARES, RateStep, capped, knee, next_rate, pace
from bench.load import Completion, OpenLoopResult, rate_step
from bench.held_figures import held_target, summarise

CLOSED_LOOP_PEAK = 430.2


def step(offered: float, started_per_s: float, completed_per_s: float, seconds: float = 4.0) -> RateStep:
    """A step of `seconds` at `offered`, whose starts and completions went at the paces given."""
    started = round(started_per_s * seconds)
    return RateStep(offered_per_s=offered, started=started, started_per_s=started_per_s,
                    completed=started, completed_per_s=completed_per_s)


def held(offered: float) -> RateStep:
    return step(offered, offered, offered * 0.99)


def test_the_recorded_overload_was_not_held() -> None:
    overloaded = step(344.2, 298.0, 297.0)
    assert not overloaded.held()
    assert "NOT HELD" in overloaded.describe()


def test_a_step_is_held_only_when_starts_and_completions_both_keep_up() -> None:
    assert held(300.0).held()
    assert not step(300.0, 280.0, 279.0).held()          # the starts fell behind the schedule
    assert not step(300.0, 300.0, 250.0).held()          # started on time, but a backlog had to drain


def test_the_ramp_climbs_from_a_share_of_the_closed_loop_peak_and_narrows_on_the_knee() -> None:
    steps: list[RateStep] = []
    assert next_rate(steps, CLOSED_LOOP_PEAK) == round(RAMP_SHARES[0] * CLOSED_LOOP_PEAK, 1)
    for share in RAMP_SHARES[:4]:                          # 172.1 .. 301.1 wf/s, all held
        steps.append(held(round(share * CLOSED_LOOP_PEAK, 1)))
    assert next_rate(steps, CLOSED_LOOP_PEAK) == 344.2     # 80 % of the closed loop's peak
    steps.append(step(344.2, 298.0, 297.0))
    assert next_rate(steps, CLOSED_LOOP_PEAK) == 322.6     # halfway between the knee and the failure
    steps.append(step(322.6, 305.0, 303.0))
    assert next_rate(steps, CLOSED_LOOP_PEAK) == 311.9
    steps.append(held(311.9))
    assert next_rate(steps, CLOSED_LOOP_PEAK) is None      # 311.9 and 322.6 are within 5 %
    assert knee(steps) == 311.9 and not capped(steps)
    # 80 % of this knee (249.5 wf/s) is a rate the open loop holds; 80 % of the closed loop's was not
    assert 0.8 * 311.9 < 301.1 < 0.8 * CLOSED_LOOP_PEAK


def test_a_step_held_above_a_failure_is_not_the_peak() -> None:
    assert knee([held(200.0), step(250.0, 200.0, 199.0), held(300.0)]) == 200.0


def test_a_ramp_that_never_holds_goes_down_by_halves_and_then_gives_up() -> None:
    steps = [step(172.1, 90.0, 80.0)]
    assert knee(steps) is None
    assert next_rate(steps, CLOSED_LOOP_PEAK) == 86.0
    steps = [step(rate, rate / 3, rate / 3) for rate in (40.0, 20.0, 10.0, 6.0)]
    assert next_rate(steps, 100.0) is None and MIN_RATE > 6.0 / 2   # 3 wf/s is too low to try


def test_a_ramp_held_all_the_way_gives_a_lower_bound() -> None:
    steps = [held(round(share * 100.0, 1)) for share in RAMP_SHARES]
    assert next_rate(steps, 100.0) is None
    assert knee(steps) == 130.0 and capped(steps)


def launched_at(rate: float, count: int, first_due: float = 1000.0, call_s: float = 0.002) -> OpenLoopResult:
    """An open loop whose start calls each returned `call_s` after they were due."""
    returned = [first_due + i / rate + call_s for i in range(count)]
    return OpenLoopResult(ids=[f"w{i}" for i in range(count)], rate=rate, start_errors=0, max_lag_ms=0.0,
                          duration_s=returned[-1] - first_due, first_due=first_due, returned=returned)


def ended_after(launched: OpenLoopResult, latency_s: Callable[[int], float]) -> dict[str, Completion]:
    """Each workflow ended `latency_s(i)` after its start call returned (end times in ms)."""
    return {item_id: Completion("COMPLETED", (at + latency_s(i)) * 1000, at + latency_s(i) + 0.001)
            for i, (item_id, at) in enumerate(zip(launched.ids, launched.returned))}


def test_an_open_loop_result_becomes_a_step_paced_by_its_calls_and_end_times() -> None:
    launched = launched_at(50.0, 100)
    measured = rate_step(launched, ended_after(launched, lambda i: 0.05))
    assert measured.started_per_s == pytest.approx(50.0) and measured.completed_per_s == pytest.approx(50.0)
    assert measured.held()


def test_a_late_last_workflow_is_no_backlog() -> None:
    """A window that ends with the last completion counts the last workflows' latency as falling
    behind: in a 1.5 s run the last ten ending 80 ms late read under 98 % of the offer, so the runs
    with the worst tails would be the ones left out of the p99. Their pace over the middle is the
    offer's."""
    launched = launched_at(664.0, 1000)
    tail = rate_step(launched, ended_after(launched, lambda i: 0.080 if i >= 990 else 0.008))
    assert tail.held()
    window = tail.completed / ((launched.returned[-1] + 0.080) - launched.first_due)
    assert window < 0.98 * 664.0   # what counting over the whole window made of it


def test_a_backlog_that_builds_is_not_held() -> None:
    launched = launched_at(900.0, 3600)
    behind = rate_step(launched, ended_after(launched, lambda i: 0.01 + i * (1 / 870.0 - 1 / 900.0)))
    assert behind.completed_per_s == pytest.approx(870.0, rel=0.01) and not behind.held()
    missing = rate_step(launched, dict(list(ended_after(launched, lambda i: 0.01).items())[:-1]))
    assert not missing.held()   # one start never completed


def test_pace_leaves_out_the_first_and_last_two_percent() -> None:
    assert pace([]) == 0.0 and pace([1.0]) == 0.0 and pace([1.0, 1.0]) == 0.0
    assert pace([0.0, 0.5, 1.0]) == 2.0
    assert pace([i / 100 for i in range(101)] + [9.0]) == pytest.approx(100.0, rel=0.02)


def loaded_run(p99: float, offered: float, started_per_s: float) -> dict:
    rate = step(offered, started_per_s, started_per_s - 1)
    figures = {"n": 3000, "p50": 10.0, "p95": p99 / 2, "p99": p99, "max": p99 * 2}
    return {"rate": {**rate.as_dict(), "describe": rate.describe()},
            "dispatch_ms": figures, "claim_ms": figures, "push_ms": figures}


def test_a_dispatch_figure_at_a_rate_not_held_is_never_the_targets() -> None:
    runs = [loaded_run(203.0, 344.2, 298.0) for _ in range(3)]
    row = held_target("dispatch p99 at 80 %", summarise(344.2, 1000, runs), "p99", 20.0)
    assert row["verdict"] == "NOT HELD" and row["value"] is None
    assert "203 ms, is an overload's" in row["note"] and "started 298.0/s" in row["note"]


def test_the_dispatch_target_takes_only_the_runs_that_held() -> None:
    runs = [loaded_run(15.0, 249.5, 249.5), loaded_run(203.0, 249.5, 200.0), loaded_run(17.0, 249.5, 249.0)]
    row = held_target("dispatch p99 at 80 %", summarise(249.5, 1000, runs), "p99", 20.0)
    assert row["verdict"] == "PASS" and row["value"] == 16.0
    assert "2 of 3 runs held" in row["note"]

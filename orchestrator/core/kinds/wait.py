"""WAIT: for a duration, until a time, for an event on a topic, or (none given) until a signal.
Ours: `duration` (seconds) or `until` (epoch ms, or a `${...}`) on the task. Conductor's:
`duration` ("10s", "1 minute") or `until` ("2024-01-01 10:00 UTC") in inputParameters. An
`inputParameters.event` waits for an event on that topic of the cluster's bus (cluster/events.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import state as m
from .. import statuses as st
from ..errors import InvalidArgument
from ..events import topic_name
from ..limits import MAX_DURATION_SECONDS, MAX_EPOCH_MS
from ..schema import WorkflowTask
from ..timetext import parse_duration_seconds, parse_until_ms
from ..values import NUMBER, TEN_YEARS, is_template, number_problem, seconds_ms, show, to_float
from .base import Checker, Kind, Outcome
from .steps import follow_waiting, key, shown

if TYPE_CHECKING:
    from ..decider.walk import Walk


def wait_literal(field: str, value: Any) -> int:
    """A WAIT input written as Conductor writes it: seconds for 'duration', epoch ms for 'until'."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{show(value)} is neither a number nor text")
    if field == "duration":
        seconds = to_float(value) if not isinstance(value, str) else parse_duration_seconds(value)
        if not math.isfinite(seconds) or not 0 <= seconds <= MAX_DURATION_SECONDS:
            raise ValueError(f"{show(value)} is not a duration from 0 to {TEN_YEARS}")
        return int(seconds * 1000)
    if isinstance(value, str) and not NUMBER.fullmatch(value.strip()):
        return parse_until_ms(value)
    number = to_float(value)
    if not math.isfinite(number) or not 0 <= number <= MAX_EPOCH_MS:
        raise ValueError(f"{show(value)} is not a time in epoch milliseconds from 0 to {MAX_EPOCH_MS}")
    return int(number)


# ---------------------------------------------------------------- registration

def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
             _previous: Any) -> None:
    duration, until = task.get("duration"), task.get("until")
    _check_event(checker, out["inputParameters"], duration, until, where)
    if duration is not None and until is not None:
        checker.problems.append(f"{where}: give 'duration' or 'until', not both (neither = wait for a signal)")
    if duration is not None:
        problem = number_problem(duration, "duration", low=0, high=MAX_DURATION_SECONDS, unit=" of seconds")
        if problem:
            checker.problems.append(f"{where}: {problem}")
    if isinstance(until, str) and "${" in until.replace("$${", ""):
        checker.template(until, f"{where}: 'until'", known)
    elif until is not None:
        literal = float(until) if isinstance(until, str) and NUMBER.fullmatch(until.strip()) else until
        if number_problem(literal, "until", low=0, high=MAX_EPOCH_MS):
            checker.problems.append(f"{where}: 'until' must be epoch milliseconds from 0 to {MAX_EPOCH_MS} "
                                    f"(year 9999) or a ${{...}} expression, got {show(until)}")
    out["duration"], out["until"] = duration, until
    if duration is None and until is None:
        _check_conductor_inputs(checker, out["inputParameters"], where)


def _check_event(checker: Checker, inputs: dict[str, Any], duration: Any, until: Any, where: str) -> None:
    event = inputs.get("event")
    if event is None:
        return
    if duration is not None or until is not None or any(inputs.get(k) is not None for k in ("duration", "until")):
        checker.problems.append(f"{where}: a WAIT waits for an event or for a time, not both")
    try:
        topic_name(event, "inputParameters.event")
    except InvalidArgument as exc:
        checker.problems.append(f"{where}: {exc} (a literal topic: the nodes consume it from registration on)")


def _check_conductor_inputs(checker: Checker, inputs: dict[str, Any], where: str) -> None:
    """Conductor's: "10s" / "2024-01-01 10:00 UTC" in inputParameters."""
    in_duration, in_until = inputs.get("duration"), inputs.get("until")
    if in_duration is not None and in_until is not None:
        checker.problems.append(f"{where}: give 'inputParameters.duration' or 'inputParameters.until', not both")
    for field, value in (("duration", in_duration), ("until", in_until)):
        if value is None or is_template(value):
            continue
        try:
            wait_literal(field, value)
        except ValueError as exc:
            checker.problems.append(f"{where}: 'inputParameters.{field}': {exc}")


# ---------------------------------------------------------------- run time

def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    task_key = key(node, suffix)
    task = walk.latest.get(task_key)
    if task is not None and task.runtime.status in st.UNSUCCESSFUL_TASK and task_key in walk.retrying \
            and node.get("until") is not None:
        walk.retrying.discard(task_key)        # an operator's retry resolves `until` again
        task = _start(walk, node, task_key, task.spec.attempt + 1)
    elif task is None:
        task = _start(walk, node, task_key, 0)
    return follow_waiting(walk, node, task)


def _start(walk: Walk, node: WorkflowTask, task_key: str, attempt: int) -> m.TaskState:
    task_id = walk.new_id()
    inputs = walk.input_for(node, task_key, task_id)
    try:
        until = _wait_until(walk, node, inputs)
    except ValueError as exc:
        return walk.add(node, task_key, status=st.FAILED_WITH_TERMINAL_ERROR, attempt=attempt, reason=str(exc),
                        input=inputs, task_id=task_id)
    return walk.add(node, task_key, status=st.IN_PROGRESS, attempt=attempt, extra={"until": until} if until else {},
                    input=inputs, task_id=task_id)


def _wait_until(walk: Walk, node: WorkflowTask, inputs: dict[str, Any]) -> int:
    """When the WAIT ends (epoch ms), 0 for a signal; ValueError naming a bad `until`."""
    duration = node.get("duration")
    if duration is not None:
        return walk.now + seconds_ms(duration)
    if node.get("until") is None:
        return _until_from_inputs(walk, inputs)
    value = walk.resolve(node["until"])
    if value is None or (isinstance(value, str) and not value.strip()):
        return walk.now                   # nothing to wait for: a missing time has passed
    return _epoch_ms(walk, value)


def _until_from_inputs(walk: Walk, inputs: dict[str, Any]) -> int:
    """Conductor's `duration` or `until` in inputParameters (resolved), 0 when neither."""
    in_duration, in_until = inputs.get("duration"), inputs.get("until")
    if in_duration is not None and in_until is not None:
        raise ValueError("both 'duration' and 'until' are given; give one")
    if in_duration is not None:
        try:
            return walk.now + wait_literal("duration", in_duration)
        except ValueError as exc:
            raise ValueError(f"'duration' resolved to {shown(in_duration)}: {exc}") from None
    if in_until is not None:
        try:
            until = wait_literal("until", in_until)
        except ValueError as exc:
            raise ValueError(f"'until' resolved to {shown(in_until)}: {exc}") from None
        if until > walk.now + MAX_DURATION_SECONDS * 1000:
            raise ValueError(f"'until' resolved to {shown(in_until)}, more than 10 years ahead")
        return max(until, 1)
    return 0


def _epoch_ms(walk: Walk, value: Any) -> int:
    """Our `until`, resolved: a time in epoch milliseconds (a number, or text of one)."""
    shown_value = shown(value)
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        number: Any = float(value)
    else:
        number = value
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        kind = {dict: "an object", list: "a list", bool: "true/false"}.get(type(value), "text")
        raise ValueError(f"'until' resolved to {kind} ({shown_value}), not a time in epoch milliseconds "
                         "(a number such as 1767225600000)")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"'until' resolved to {shown_value}, not a finite time in epoch milliseconds")
    if number < 0:
        raise ValueError(f"'until' resolved to {shown_value}, a negative time; give epoch milliseconds")
    if number > walk.now + MAX_DURATION_SECONDS * 1000:
        raise ValueError(f"'until' resolved to {shown_value}, more than 10 years ahead (the limit is "
                         f"{MAX_DURATION_SECONDS} s); give a time in epoch milliseconds")
    return int(number)


def topics(task: Mapping[str, Any]) -> list[str]:
    """The topic it waits on (`inputParameters.event`): the nodes consume it from registration on."""
    event = (task.get("inputParameters") or {}).get("event")
    return [topic_name(event)] if isinstance(event, str) else []


KIND = Kind(names=("WAIT",), role="system", fields=frozenset({"duration", "until"}), validate=validate,
            decide=decide, topics=topics)

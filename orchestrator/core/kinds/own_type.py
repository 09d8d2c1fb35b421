"""Types that are not Conductor's: a task of type `charge_card` runs on the workers that serve
task type `charge_card`, under the task definition named after the type (or, in a Conductor
definition, after the task, as Conductor's user-defined tasks do). The registry answers with
this kind for every type name it does not know (`kinds.kind_for`); the validator only lets such
a task through when that task definition exists."""

from __future__ import annotations

from typing import Any

from .base import Checker, Kind
from .steps import run_on_worker


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], *_: Any) -> None:
    out["taskType"] = task["type"]


KIND = Kind(names=(), role="worker", fields=frozenset(), validate=validate, decide=run_on_worker)

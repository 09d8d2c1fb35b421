"""JSON_JQ_TRANSFORM: `{"result": first value, "resultList": values}` of the jq program
`queryExpression` (in inputParameters) over the task's input."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import jqtransform
from ..schema import WorkflowTask
from ..values import is_template
from .base import Checker, Kind, Outcome
from .steps import instant

if TYPE_CHECKING:
    from ..decider.walk import Walk


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
    query = out["inputParameters"].get("queryExpression")
    if is_template(query):
        return
    problem = jqtransform.check_query(query)
    if problem:
        checker.problems.append(f"{where}: 'inputParameters.{problem[1:]}" if problem.startswith("'") else
                                f"{where}: {problem}")


def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    return instant(walk, node, suffix, jqtransform.transform)[0]


KIND = Kind(names=("JSON_JQ_TRANSFORM",), role="system", fields=frozenset(), validate=validate, decide=decide,
            runs_user_code=True)

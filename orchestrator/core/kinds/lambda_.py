"""LAMBDA: `scriptExpression` is the body of a JavaScript function; `{"result": its return}`.
Ours on the task; Conductor's in inputParameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import javascript
from ..schema import WorkflowTask
from .base import Checker, Kind, Outcome
from .checks import check_script
from .steps import instant

if TYPE_CHECKING:
    from ..decider.walk import Walk


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
    inputs = out["inputParameters"]
    if "scriptExpression" in task and task["scriptExpression"] is not None:
        check_script(checker.problems, task["scriptExpression"], f"{where}: 'scriptExpression'", wrap_lambda=True)
        out["scriptExpression"] = task["scriptExpression"]
    elif "scriptExpression" in inputs:
        check_script(checker.problems, inputs["scriptExpression"], f"{where}: 'inputParameters.scriptExpression'",
                     wrap_lambda=True)
    else:
        checker.problems.append(f"{where}: 'inputParameters.scriptExpression' (the body of a JavaScript "
                                "function) is required")


def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    def compute(inputs: dict[str, Any]) -> dict[str, Any]:
        script = node.get("scriptExpression") or inputs.get("scriptExpression")
        if not isinstance(script, str) or not script.strip():
            raise ValueError("'scriptExpression' resolved to no script")
        return {"result": javascript.evaluate(javascript.lambda_script(script), inputs)}
    return instant(walk, node, suffix, compute)[0]


KIND = Kind(names=("LAMBDA",), role="system", fields=frozenset({"scriptExpression"}), validate=validate,
            decide=decide, runs_user_code=True)

"""INLINE: `{"result": value}` of an expression. Ours: `expression` (and `evaluatorType`,
default the safe expression language) on the task; Conductor's: both in inputParameters,
resolved like any input. Evaluators: a safe expression, JavaScript (Conductor's `$` = the
inputs) or the value of the input it names (value-param)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import javascript
from ..safe_expr import evaluate
from ..schema import WorkflowTask
from ..values import is_template, names_key, show
from .base import Checker, Kind, Outcome
from .checks import INLINE_EVALUATORS, JAVASCRIPT, check_safe_expression, check_script
from .steps import instant, shown

if TYPE_CHECKING:
    from ..decider.walk import Walk


def _check_evaluated(checker: Checker, evaluator: Any, source: Any, where: str, *, field: str = "expression") -> None:
    """Check an expression for its evaluator: a safe expression, JavaScript, or the name of
    an input parameter (value-param)."""
    if evaluator == "expression":
        if not is_template(source):
            check_safe_expression(checker.problems, source, f"{where}: '{field}'")
    elif evaluator in JAVASCRIPT:
        check_script(checker.problems, source, f"{where}: '{field}'")
    elif evaluator == "value-param":
        if not isinstance(source, str):
            checker.problems.append(f"{where}: with evaluatorType 'value-param', '{field}' must name a key "
                                    "of 'inputParameters'")
    elif not is_template(evaluator):
        checker.problems.append(f"{where}: 'evaluatorType' must be one of {', '.join(INLINE_EVALUATORS)}, got "
                                f"{show(evaluator)}")


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
    inputs = out["inputParameters"]
    if "expression" in task:   # ours: the expression and its evaluator on the task
        evaluator = task.get("evaluatorType") or "expression"
        _check_evaluated(checker, evaluator, task["expression"], where)
        if evaluator == "value-param" and not names_key(task["expression"], inputs):
            checker.problems.append(f"{where}: with evaluatorType 'value-param', 'expression' must name a key "
                                    "of 'inputParameters'")
        out["expression"], out["evaluatorType"] = task["expression"], evaluator
    elif "expression" in inputs:   # Conductor's: both in inputParameters, resolved like any input
        evaluator = task.get("evaluatorType") or inputs.get("evaluatorType")
        if evaluator is None:
            checker.problems.append(f"{where}: 'inputParameters.evaluatorType' is required with "
                                    f"'inputParameters.expression' ({', '.join(INLINE_EVALUATORS)})")
        else:
            _check_evaluated(checker, evaluator, inputs["expression"], where, field="inputParameters.expression")
            if evaluator == "value-param" and not names_key(inputs["expression"], inputs):
                checker.problems.append(f"{where}: with evaluatorType 'value-param', 'inputParameters.expression' "
                                        "must name a key of 'inputParameters'")
        if "evaluatorType" in task:
            out["evaluatorType"] = evaluator
    else:
        checker.problems.append(f"{where}: 'expression' is required (on the task, or in 'inputParameters' with "
                                "'evaluatorType', as Conductor writes it)")


def _evaluate(evaluator: Any, source: Any, inputs: dict[str, Any]) -> Any:
    """An expression's value for its evaluator."""
    if evaluator == "expression":
        return evaluate(source, inputs)
    if evaluator in JAVASCRIPT:
        return javascript.evaluate(source, inputs)
    if evaluator == "value-param":
        return inputs.get(source) if isinstance(source, str) else None
    if evaluator is None:
        raise ValueError("'evaluatorType' is required (javascript, graaljs, value-param or expression)")
    raise ValueError(f"'evaluatorType' {shown(evaluator)} is not supported (javascript, graaljs, value-param or "
                     "expression)")


def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    def compute(inputs: dict[str, Any]) -> dict[str, Any]:
        if "expression" in node:
            return {"result": _evaluate(node.get("evaluatorType") or "expression", node["expression"], inputs)}
        evaluator = node.get("evaluatorType") or inputs.get("evaluatorType")
        return {"result": _evaluate(evaluator, inputs.get("expression"), inputs)}
    return instant(walk, node, suffix, compute)[0]


KIND = Kind(names=("INLINE",), role="system", fields=frozenset({"expression", "evaluatorType"}), validate=validate,
            decide=decide)
